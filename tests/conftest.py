"""Settings shared by every test directory."""

import os

from hypothesis import settings

# CI must be reproducible: the same examples on every run, more of them, and
# no per-example deadline on a loaded 2-core machine.  Locally, hypothesis
# explores new random examples each run (and replays failures it found).
settings.register_profile("ci", derandomize=True, max_examples=300, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
