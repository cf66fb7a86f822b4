"""The devcloud's time source: ``CLOCK_BOOTTIME``.

Every instant the devcloud records (ground truth, outage windows, request
arrival) is taken on ``CLOCK_BOOTTIME`` because that is the clock a guest
reads from ``/proc/uptime``: an in-guest meter and the ground truth can then
be compared without any offset estimation.
"""

from __future__ import annotations

import time


def now() -> float:
    """Seconds on ``CLOCK_BOOTTIME`` (same epoch as ``/proc/uptime``)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)

