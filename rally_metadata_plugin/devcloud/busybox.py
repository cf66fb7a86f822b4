"""The busybox ``sh`` guests run, and the one way its builds differ here.

CirrOS runs busybox ``sh``; so do the devcloud's guests (:mod:`.guests`)
and the tests' fake guests (:mod:`rally_metadata_plugin.testing`). A build
with ``FEATURE_SH_STANDALONE`` (Debian's ``busybox-static``) runs its own
applet for a command name before it looks in ``PATH``: its ``sh`` always has
``wget``, ``hostname`` and the rest, whatever ``PATH`` holds, so a script
put first in ``PATH`` to stand in for one of them is never run. Standard
library only.
"""

from __future__ import annotations

import functools
import shutil
import subprocess


def shell_argv(busybox: str | None = None) -> list[str]:
    """``busybox sh``: the given build, else the one on PATH; /bin/sh when
    there is none."""
    busybox = busybox or shutil.which("busybox")
    return [busybox, "sh"] if busybox else ["/bin/sh"]


@functools.lru_cache(maxsize=None)
def runs_applets_first(shell: tuple[str, ...]) -> bool:
    """Whether ``shell`` (an argv) runs busybox applets before looking in
    PATH: it finds ``wget`` with a PATH that holds nothing."""
    try:
        return subprocess.run(
            [*shell, "-c", "command -v wget"], env={"PATH": "/nonexistent"},
            capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
