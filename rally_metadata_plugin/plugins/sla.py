"""SLA ``max_metadata_downtime``: limits on the metadata downtime the scenario measured.

It reads each iteration's ``output`` through :func:`rally_metadata_plugin.core.report.extract`,
the one definition of that format.
"""

from __future__ import annotations

import dataclasses
import typing as t

from rally import consts
from rally.task import sla

from rally_metadata_plugin.core import report

NAME = "max_metadata_downtime"

_LIMIT = {"type": "number", "minimum": 0}
#: (config key, what it limits, unit label) in the order details() reports them.
CRITERIA = (
    ("per_migration", "downtime of any single migration"),
    ("per_iteration", "total downtime of any iteration"),
    ("max_outage", "longest single outage"),
)


@dataclasses.dataclass(frozen=True)
class _Worst:
    value: float
    timestamp: float
    migration: t.Optional[int] = None


def _limits(criterion_value: t.Any) -> dict[str, float]:
    if isinstance(criterion_value, dict):
        return {k: float(v) for k, v in criterion_value.items()}
    return {"per_migration": float(criterion_value)}


@sla.configure(name=NAME)
class MaxMetadataDowntime(sla.SLA):
    """Metadata downtime measured in the guest stays within limits (seconds).

    Give one number (the limit for any single live migration's total
    metadata downtime, e.g. 6.0) or an object with one or more of
    per_migration, per_iteration and max_outage. Failed migrations are not
    measurements: they count in no limit. An iteration without a measured
    migration (it failed before measuring, or every migration it requested
    failed) does not pass.
    """

    CONFIG_SCHEMA = {
        "$schema": consts.JSON_SCHEMA,
        "description": "A number: the limit in seconds for any single live migration's total "
        "metadata downtime (the same as {per_migration: N}). Or an object with at least one "
        "of the keys below.",
        "type": ["number", "object"],
        "minimum": 0,
        "properties": {
            "per_migration": dict(_LIMIT, description=(
                "Seconds: the most metadata downtime any single live migration may cause "
                "(all its outages, from its request until the next one).")),
            "per_iteration": dict(_LIMIT, description=(
                "Seconds: the most metadata downtime in one iteration (all outages after "
                "the healthy baseline, all migrations together).")),
            "max_outage": dict(_LIMIT, description=(
                "Seconds: the longest any single metadata outage may last.")),
        },
        "additionalProperties": False,
        "minProperties": 1,
    }

    def __init__(self, criterion_value: t.Any) -> None:
        super().__init__(criterion_value)
        self.limits = _limits(criterion_value)
        self.worst: dict[str, _Worst] = {}
        self.timestamps: list[float] = []
        self.unmeasured: list[float] = []

    # -- accumulation -------------------------------------------------------

    def add_iteration(self, iteration: t.Mapping[str, t.Any]) -> bool:
        timestamp = float(iteration.get("timestamp") or 0.0)
        self.timestamps.append(timestamp)
        figures = report.extract(iteration.get("output"))
        if figures is None or not figures.measured:
            self.unmeasured.append(timestamp)
        else:
            self._consider("per_iteration", _Worst(figures.total_downtime, timestamp))
            self._consider("max_outage", _Worst(figures.max_outage, timestamp))
            for migration in figures.measured_migrations:
                self._consider("per_migration",
                               _Worst(migration.downtime, timestamp, migration.index))
        self.success = self._passed()
        return self.success

    def merge(self, other: "MaxMetadataDowntime") -> bool:
        self.timestamps.extend(other.timestamps)
        self.unmeasured.extend(other.unmeasured)
        for key, worst in other.worst.items():
            self._consider(key, worst)
        self.success = self._passed()
        return self.success

    def _consider(self, key: str, candidate: _Worst) -> None:
        current = self.worst.get(key)
        if current is None or candidate.value > current.value:
            self.worst[key] = candidate

    def _passed(self) -> bool:
        if self.unmeasured:
            return False
        return all(self.worst[key].value <= limit
                   for key, limit in self.limits.items() if key in self.worst)

    # -- reporting ----------------------------------------------------------

    def _iteration_number(self, timestamp: float) -> int:
        """Position of an iteration as Rally's report numbers them (by start time)."""
        return sorted(self.timestamps).index(timestamp) + 1

    def details(self) -> str:
        parts = []
        for key, label in CRITERIA:
            if key not in self.limits:
                continue
            limit = self.limits[key]
            worst = self.worst.get(key)
            if worst is None:
                parts.append(f"{label}: no data (limit {limit:.2f}s)")
                continue
            where = f"iteration {self._iteration_number(worst.timestamp)}"
            if worst.migration is not None:
                where += f", migration {worst.migration}"
            sign = "<=" if worst.value <= limit else ">"
            parts.append(f"{label} {worst.value:.2f}s {sign} {limit:.2f}s (worst: {where})")
        if self.unmeasured:
            numbers = ", ".join(str(self._iteration_number(ts)) for ts in sorted(self.unmeasured))
            parts.append(f"{len(self.unmeasured)} of {len(self.timestamps)} iteration(s) have "
                         f"no metadata measurement ({numbers}): they failed before measuring or "
                         f"none of their live migrations succeeded")
        if not self.timestamps:
            parts.append("no iterations")
        return "Metadata downtime: " + "; ".join(parts) + f" - {self.status()}"
