"""How close a task's measurements on the devcloud came to its ground truth.

Pure functions of the Rally results (``rally task export --type json``) and
the devcloud's ``truth.jsonl``; the VM guests' e2e tests and
``tools/bench_guests.py`` use them.

What an in-guest meter can be held to differs with the guests:

* VM guests: the guest's clock stops while QEMU pauses it, and the outage
  starts at the switchover, inside the pause; so the guest sees the part of
  the outage after it resumed: ``outage_end - max(outage_start,
  pause_end)`` (exact; the meter's own error bound covers its probes).
* process guests: their clock (the host's) keeps running while frozen, so
  the frozen time before the outage cannot be told from the outage: the
  truth is a range (see ``tests/e2e/test_devcloud_task.py``).

The guest pause the scenario estimates (controller-elapsed minus
guest-elapsed time) is compared with QEMU's ``downtime`` and with the
guest's real stop, source ``STOP`` to destination ``RESUME`` (the same as
the downtime for a live migration, the whole copy for a paused one).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Iterable, Optional

from rally_metadata_plugin.core import report


@dataclasses.dataclass(frozen=True)
class MigrationAccuracy:
    """One measured migration next to its truth (seconds)."""

    server: str
    index: int
    measured: float
    error_bound: float
    true_shortest: float
    true_longest: float
    pause_estimate: Optional[float]
    qemu_downtime: Optional[float]
    stopped: Optional[float]
    #: the scenario's own bound on its pause estimate (SSH round trips)
    pause_bound: Optional[float] = None

    @property
    def downtime_error(self) -> float:
        """How far the measurement is outside the true range (0 inside)."""
        return max(self.true_shortest - self.measured,
                   self.measured - self.true_longest, 0.0)

    @property
    def pause_error(self) -> Optional[float]:
        """|pause estimate - the guest's real stop| (None: not both known)."""
        if self.pause_estimate is None or self.stopped is None:
            return None
        return abs(self.pause_estimate - self.stopped)

    @property
    def pause_error_vs_downtime(self) -> Optional[float]:
        if self.pause_estimate is None or self.qemu_downtime is None:
            return None
        return abs(self.pause_estimate - self.qemu_downtime)


def read_truth(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()
            if line.strip()]


def measured_migrations(results: dict) -> list[report.MigrationFigures]:
    """Every measured migration of every iteration of a results document."""
    found = []
    for task in results.get("tasks", ()):
        for subtask in task.get("subtasks", ()):
            for workload in subtask.get("workloads", ()):
                for iteration in workload.get("data", ()):
                    figures = report.extract(iteration.get("output", {}))
                    if figures is not None:
                        found.extend(m for m in figures.migrations
                                     if not m.failed)
    return found


def observable_outage(record: dict) -> tuple[float, float]:
    """(shortest, longest) outage an in-guest meter can be held to."""
    duration = record["outage_end"] - record["outage_start"]
    if "qemu" in record and record.get("pause_end") is not None:
        visible = record["outage_end"] - max(record["outage_start"],
                                             record["pause_end"])
        return max(visible, 0.0), max(visible, 0.0)
    frozen_before = max(0.0, min(record["outage_start"], record["pause_end"])
                        - record["pause_start"])
    return duration, duration + frozen_before


def compare(results: dict, truth: Iterable[dict]) -> list[MigrationAccuracy]:
    by_key = {(r["server_id"], r["migration_index"]): r for r in truth}
    rows = []
    for migration in measured_migrations(results):
        record = by_key.get((migration.server, migration.index))
        if record is None or record.get("status") != "completed":
            continue
        if record.get("outage_end") is None:
            shortest = longest = 0.0
        else:
            shortest, longest = observable_outage(record)
        qemu = record.get("qemu") or {}
        downtime_ms = qemu.get("downtime_ms")
        stopped = None
        if record.get("pause_start") is not None and record.get("pause_end") is not None:
            stopped = record["pause_end"] - record["pause_start"]
        rows.append(MigrationAccuracy(
            migration.server, migration.index, migration.downtime,
            migration.downtime_error, shortest, longest, migration.pause,
            None if downtime_ms is None else downtime_ms / 1000.0, stopped,
            migration.pause_error))
    return rows


def summary(values: Iterable[Optional[float]]) -> Optional[tuple[float, float]]:
    """(mean, max) of the known values, None without any."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return statistics.fmean(known), max(known)
