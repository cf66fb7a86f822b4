#!/usr/bin/env python3
"""Run the test suite: ``python3 tools/test.py [pytest arguments]``.

Creates ``.venv`` with the project and its test dependencies on first use,
then runs pytest on ``tests/``.  Tests that need busybox, dash, iptables or
root skip with the reason when those are missing; with ``RMP_REQUIRE_ALL=1``
(set by CI) they fail instead.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bootstrap  # noqa: E402

if __name__ == "__main__":
    python = _bootstrap.ensure_venv()
    args = sys.argv[1:] or ["tests"]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    sys.exit(subprocess.call([str(python), "-m", "pytest", *args], cwd=_bootstrap.ROOT, env=env))
