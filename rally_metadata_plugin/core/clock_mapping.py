"""Relate the controller's clock to the guest's ``/proc/uptime`` clock.

The controller reads the guest uptime over SSH and notes its own monotonic
time just before and just after; the guest value was taken somewhere in that
round trip, so the mapping is known to within half the round trip (plus the
uptime resolution).  Of several readings the one with the shortest round trip
is the tightest (:func:`tightest`).  A live migration pauses the guest, and the guest's
clock does not advance while paused (kvmclock is restored on resume): the
difference between controller-elapsed and guest-elapsed time across a
migration estimates that pause, which no in-guest meter can see.

Where in its round trip the guest reads its clock is not the middle: the
command starts in the guest (SSH channel, a shell) before it reads, and the
answer leaves right after.  That offset is the same for two readings taken
the same way, so the pause estimate compares readings taken the same way
(a plain clock command, not one that also does other work) and the offset
cancels; it stays inside each reading's error bound either way.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from rally_metadata_plugin.core.log_analysis import CLOCK_RESOLUTION


@dataclasses.dataclass(frozen=True)
class ClockSample:
    """One reading of the guest clock, bracketed by controller readings."""

    controller_before: float
    controller_after: float
    guest: float

    @property
    def controller(self) -> float:
        return (self.controller_before + self.controller_after) / 2

    @property
    def error(self) -> float:
        return self.round_trip / 2 + CLOCK_RESOLUTION

    @property
    def round_trip(self) -> float:
        return self.controller_after - self.controller_before

    def to_guest(self, controller_time: float) -> float:
        """Guest time at ``controller_time``, assuming no pause in between."""
        return self.guest + (controller_time - self.controller)


@dataclasses.dataclass(frozen=True)
class PauseEstimate:
    controller_elapsed: float
    guest_elapsed: float
    error: float

    @property
    def pause(self) -> float:
        """Time the guest clock did not see; never negative beyond the error."""
        return self.controller_elapsed - self.guest_elapsed


def estimate_pause(before: ClockSample, after: ClockSample) -> PauseEstimate:
    """Compare guest-elapsed with controller-elapsed time between two samples."""
    return PauseEstimate(
        controller_elapsed=after.controller - before.controller,
        guest_elapsed=after.guest - before.guest,
        error=before.error + after.error,
    )


def tightest(samples: Iterable[ClockSample]) -> ClockSample:
    """The reading with the shortest round trip: the least disturbed one."""
    return min(samples, key=lambda sample: sample.round_trip)
