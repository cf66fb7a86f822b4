"""How much CPU the devcloud's process guests need: sizing a run.

On a real cloud every guest has vCPUs of its own; on the devcloud all guests
share this machine's cores with the devcloud and Rally. Each probe of the
in-guest meter forks a subshell and runs an HTTP client, which costs a few
milliseconds of CPU; a run whose probes need more CPU than the machine has
does not measure the cloud any more, it measures the machine: probes start
late and time out, and downtime is over-reported. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses

#: CPU seconds per probe, by HTTP client, measured by ``tools/bench_meter.py``
#: (fork of the probe subshell included; wget reading the ~1.2 KB
#: meta_data.json the devcloud task probes) on the 2-core machines this
#: project is developed on. Process guests use busybox wget, as CirrOS does;
#: Debian's busybox (up to 1.36.1-4) is built without wget's -T, so each
#: probe also runs busybox ``timeout``, whose watchdog process lives a second.
#: ``wget, static busybox``: Debian's busybox-static, which the main command
#: fetches for the guests (``tools/fetch-busybox-static``): its shell runs
#: ``timeout`` and ``wget`` as built-in applets, without loading a program
#: (one bench run measured 2.77 ms for it against 5.17 ms for the dynamic
#: build; scaled to the 3.7 ms above, 2.0 ms).
PROBE_CPU_SECONDS = {"wget": 0.0037, "wget, static busybox": 0.0020, "curl": 0.0114}
#: Share of the machine's cores probes may take before measurements suffer:
#: the rest is for the devcloud itself, Rally and the guests' other work.
PROBE_CPU_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class GuestCpuBudget:
    """Cores the guests' probes need, idle and while all of them migrate."""

    guests: int
    steady_cores: float        # every guest at probe_interval
    migrating_cores: float     # every guest at fast_probe_interval
    available_cores: float     # PROBE_CPU_SHARE of the machine's cores

    @property
    def fits(self) -> bool:
        return self.migrating_cores <= self.available_cores

    def advice(self) -> str:
        """One paragraph a user can act on, when the run does not fit."""
        return (
            f"{self.guests} guests at once need about {self.migrating_cores:.1f} "
            f"CPU cores for their probes while they migrate ({self.steady_cores:.1f} "
            f"between migrations), more than the {self.available_cores:.1f} this "
            "machine can spare: probes will start late and time out, and the "
            "downtime measured will be the machine's, not the devcloud's. Use "
            "fewer guests at once (concurrency) or slower probes "
            "(probe_interval and fast_probe_interval, e.g. 1.0).")


def guest_cpu_budget(guests: int, probe_interval: float,
                     fast_probe_interval: float, cores: int,
                     tool: str = "wget") -> GuestCpuBudget:
    """The probes' CPU demand of ``guests`` guests on ``cores`` cores."""
    cost = PROBE_CPU_SECONDS[tool]
    return GuestCpuBudget(
        guests=guests,
        steady_cores=guests * cost / probe_interval,
        migrating_cores=guests * cost / min(probe_interval, fast_probe_interval),
        available_cores=cores * PROBE_CPU_SHARE)
