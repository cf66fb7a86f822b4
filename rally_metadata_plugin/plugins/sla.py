"""SLAs ``max_metadata_downtime`` and ``max_network_downtime``: limits on what the scenario
measured, metadata downtime seen from the guest and network downtime of its address seen from
the Rally host.  Both have the same shape and the same logic (:class:`_DowntimeLimits`); they
differ only in which figures they read.

They read each iteration's ``output`` through :func:`rally_metadata_plugin.core.report.extract`,
the one definition of that format.
"""

from __future__ import annotations

import dataclasses
import typing as t

from rally import consts
from rally.task import sla

from rally_metadata_plugin.core import report

NAME = "max_metadata_downtime"
NETWORK_NAME = "max_network_downtime"

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


def _schema(what: str, scope: str) -> dict:
    return {
        "$schema": consts.JSON_SCHEMA,
        "description": f"A number: the limit in seconds for any single live migration's total "
        f"{what} downtime (the same as {{per_migration: N}}). Or an object with at least one "
        f"of the keys below.",
        "type": ["number", "object"],
        "minimum": 0,
        "properties": {
            "per_migration": dict(_LIMIT, description=(
                f"Seconds: the most {what} downtime any single live migration may cause "
                f"(all its outages, from its request until the next one).")),
            "per_iteration": dict(_LIMIT, description=(
                f"Seconds: the most {what} downtime in one iteration (all outages after "
                f"{scope}, all migrations together).")),
            "max_outage": dict(_LIMIT, description=(
                f"Seconds: the longest any single {what} outage may last.")),
        },
        "additionalProperties": False,
        "minProperties": 1,
    }


class _DowntimeLimits(sla.SLA):
    """What both SLAs do; a subclass says which figures it reads (:meth:`_measurement`)."""

    #: Capitalised subject of details(), e.g. "Metadata downtime".
    SUBJECT = ""
    #: (what an iteration lacks, why it may), for details().
    UNMEASURED = ("", "")

    def __init__(self, criterion_value: t.Any) -> None:
        super().__init__(criterion_value)
        self.limits = _limits(criterion_value)
        self.worst: dict[str, _Worst] = {}
        self.timestamps: list[float] = []
        self.unmeasured: list[float] = []

    @staticmethod
    def _measurement(figures: report.IterationFigures
                     ) -> t.Optional[tuple[float, float, list[tuple[int, float]]]]:
        """(iteration total, longest outage, [(migration, downtime)]), or None: not measured."""
        raise NotImplementedError

    # -- accumulation -------------------------------------------------------

    def add_iteration(self, iteration: t.Mapping[str, t.Any]) -> bool:
        timestamp = float(iteration.get("timestamp") or 0.0)
        self.timestamps.append(timestamp)
        figures = report.extract(iteration.get("output"))
        measurement = None if figures is None else self._measurement(figures)
        if measurement is None:
            self.unmeasured.append(timestamp)
        else:
            total, longest, migrations = measurement
            self._consider("per_iteration", _Worst(total, timestamp))
            self._consider("max_outage", _Worst(longest, timestamp))
            for index, downtime in migrations:
                self._consider("per_migration", _Worst(downtime, timestamp, index))
        self.success = self._passed()
        return self.success

    def merge(self, other: "_DowntimeLimits") -> bool:
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
            what, why = self.UNMEASURED
            parts.append(f"{len(self.unmeasured)} of {len(self.timestamps)} iteration(s) have "
                         f"{what} ({numbers}): {why}")
        if not self.timestamps:
            parts.append("no iterations")
        return f"{self.SUBJECT}: " + "; ".join(parts) + f" - {self.status()}"


@sla.configure(name=NAME)
class MaxMetadataDowntime(_DowntimeLimits):
    """Metadata downtime measured in the guest stays within limits (seconds).

    Give one number (the limit for any single live migration's total
    metadata downtime, e.g. 6.0) or an object with one or more of
    per_migration, per_iteration and max_outage. Failed migrations are not
    measurements: they count in no limit. An iteration without a measured
    migration (it failed before measuring, or every migration it requested
    failed) does not pass.
    """

    CONFIG_SCHEMA = _schema("metadata", "the healthy baseline")
    SUBJECT = "Metadata downtime"
    UNMEASURED = ("no metadata measurement",
                  "they failed before measuring or none of their live migrations succeeded")

    @staticmethod
    def _measurement(figures):
        if not figures.measured:
            return None
        return (figures.total_downtime, figures.max_outage,
                [(m.index, m.downtime) for m in figures.measured_migrations])


@sla.configure(name=NETWORK_NAME)
class MaxNetworkDowntime(_DowntimeLimits):
    """Network downtime of the guest seen from the Rally host stays within limits (seconds).

    The scenario's network meter probes the guest's address (floating IP,
    else fixed) from the Rally host (network_probe "icmp" or "tcp"): it measures it
    beside metadata downtime, on the controller's clock. Give one number
    (the limit for any single live migration's total network downtime, e.g.
    5.0 as Tempest's default) or an object with one or more of
    per_migration, per_iteration and max_outage. Failed migrations count in
    no limit. An iteration without a network measurement (network_probe
    "none", it failed before measuring, or none of its live migrations
    succeeded) does not pass.
    """

    CONFIG_SCHEMA = _schema("network", "the network's healthy baseline")
    SUBJECT = "Network downtime"
    UNMEASURED = ("no network measurement",
                  "the network meter was off (network_probe \"none\"), they failed before "
                  "measuring, or none of their live migrations succeeded")

    @staticmethod
    def _measurement(figures):
        migrations = figures.network_measured_migrations
        if not migrations:
            return None
        return (figures.network_downtime or 0.0, figures.network_max_outage or 0.0,
                [(m.index, m.network_downtime) for m in migrations])
