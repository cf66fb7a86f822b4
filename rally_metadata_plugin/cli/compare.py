"""Compare runs of the metadata task: did downtime get worse?

Inputs are Rally tasks: a file written by ``rally task export --type json``
(or ``rally task report --json``), or a task UUID in the local Rally
database.  Every measured migration's figures (failed migrations are not
measurements) are read back from the iterations' output with
:func:`rally_metadata_plugin.core.report.extract`, grouped per
workload, and each metric of each candidate run is compared with the
baseline by :func:`rally_metadata_plugin.core.regression.compare`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Callable, Iterable, Optional, Sequence

from rally_metadata_plugin.core import regression
from rally_metadata_plugin.core import report

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class UnusableInput(Exception):
    """An input that is not a Rally task with a metadata workload."""


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    title: str
    unit: str
    value: Callable[[report.MigrationFigures], Optional[float]]
    #: Overrides the absolute threshold for metrics not in seconds.
    absolute: Optional[float] = None


METRICS = (
    Metric("downtime", "Metadata downtime per migration", "s", lambda m: m.downtime),
    Metric("max_outage", "Longest metadata outage per migration", "s", lambda m: m.max_outage),
    Metric("outage_count", "Metadata outages per migration", "", lambda m: m.outage_count,
           absolute=1.0),
    Metric("pause", "Estimated guest pause per migration", "s", lambda m: m.pause),
    Metric("network_downtime", "Network downtime per migration", "s",
           lambda m: m.network_downtime),
)
METRICS_BY_NAME = {metric.name: metric for metric in METRICS}
DEFAULT_GATES = ("downtime", "max_outage")


@dataclasses.dataclass(frozen=True)
class WorkloadRun:
    """One workload of one task: its migrations and its SLA outcome."""

    key: str
    title: str
    migrations: tuple[report.MigrationFigures, ...]
    iterations: int
    failed_iterations: int
    sla_failures: tuple[str, ...]

    def values(self, metric: Metric) -> list[float]:
        found = (metric.value(m) for m in self.migrations)
        return [float(v) for v in found if v is not None]

    def by_index(self, metric: Metric) -> dict[int, list[float]]:
        """Values per position of the migration in its iteration's loop."""
        grouped: dict[int, list[float]] = {}
        for migration in self.migrations:
            value = metric.value(migration)
            if value is not None:
                grouped.setdefault(migration.index, []).append(float(value))
        return grouped


@dataclasses.dataclass(frozen=True)
class Run:
    label: str
    task_uuid: str
    workloads: dict[str, WorkloadRun]


def runs_from_export(results: dict, label: str) -> list[Run]:
    """The runs (one per task) in a Rally JSON export, metadata workloads only."""
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), list):
        raise UnusableInput(f"{label}: not a Rally JSON export (no 'tasks' list); write one "
                            f"with: rally task export UUID --type json --to FILE")
    runs = []
    for task in results["tasks"]:
        workloads = {}
        for s_index, subtask in enumerate(task.get("subtasks") or ()):
            for workload in subtask.get("workloads") or ():
                scenario = next(iter(workload.get("scenario") or {}), None)
                if scenario != report.SCENARIO_NAME:
                    continue
                key = f"{report.SCENARIO_NAME} [subtask {s_index + 1}, workload {workload.get('position', 0) + 1}]"
                migrations = []
                for iteration in workload.get("data") or ():
                    figures = report.extract(iteration.get("output"))
                    if figures is not None:
                        migrations.extend(figures.measured_migrations)
                sla = (workload.get("sla_results") or {}).get("sla") or ()
                workloads[key] = WorkloadRun(
                    key=key,
                    title=subtask.get("title") or "",
                    migrations=tuple(migrations),
                    iterations=int(workload.get("total_iteration_count") or 0),
                    failed_iterations=int(workload.get("failed_iteration_count") or 0),
                    sla_failures=tuple(f"{s.get('criterion')}: {s.get('detail')}"
                                       for s in sla if not s.get("success")),
                )
        if not workloads:
            raise UnusableInput(f"{label}: task {task.get('uuid')} has no {report.SCENARIO_NAME} workload")
        runs.append(Run(label, str(task.get("uuid")), workloads))
    if not runs:
        raise UnusableInput(f"{label}: the export holds no task")
    return runs


def _export_from_database(uuid: str, rally_config: Optional[str]) -> dict:
    """``rally task export --type json`` of a task in the local Rally database."""
    try:
        from rally import api as rally_api
        from rally import exceptions as rally_exceptions
        from rally import plugins as rally_plugins

        api = rally_api.API(config_file=rally_config)
        rally_plugins.load()  # the JSON exporter is a plugin
        exported = api.task.export([uuid], "json")
    except rally_exceptions.RallyException as error:
        raise UnusableInput(f"{uuid}: {error}") from None
    except Exception as error:  # a broken or missing database, a bad config
        raise UnusableInput(f"{uuid}: cannot read it from the Rally database: {error}") from None
    return json.loads(exported["print"])


def load_run(source: str, rally_config: Optional[str] = None) -> Run:
    """One run from a JSON export file or a task UUID."""
    path = pathlib.Path(source)
    if path.exists():
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise UnusableInput(f"{source}: cannot read it: {error}") from None
        except json.JSONDecodeError as error:
            raise UnusableInput(f"{source}: not JSON ({error})") from None
        label = str(path)
    elif _UUID.match(source):
        results, label = _export_from_database(source, rally_config), source
    else:
        raise UnusableInput(f"{source}: no such file, and not a task UUID")
    runs = runs_from_export(results, label)
    if len(runs) != 1:
        raise UnusableInput(f"{source}: holds {len(runs)} tasks; export one task per file")
    return runs[0]


def short_labels(labels: Sequence[str]) -> list[str]:
    """The shortest path suffixes that still tell the inputs apart."""
    parts = [pathlib.PurePath(label).parts for label in labels]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        candidates = [str(pathlib.PurePath(*p[-depth:])) if p else "" for p in parts]
        if len(set(candidates)) == len(candidates):
            return candidates
    return list(labels)


def load_runs(sources: Sequence[str], rally_config: Optional[str] = None) -> list[Run]:
    """Runs for ``sources``, labelled by the shortest distinct part of their names."""
    runs = [load_run(source, rally_config) for source in sources]
    labels = short_labels([run.label for run in runs])
    return [dataclasses.replace(run, label=label) for run, label in zip(runs, labels)]


@dataclasses.dataclass(frozen=True)
class MetricComparison:
    workload: str
    metric: Metric
    candidate: str
    result: regression.Comparison
    gating: bool


@dataclasses.dataclass(frozen=True)
class Report:
    baseline: Run
    candidates: tuple[Run, ...]
    comparisons: tuple[MetricComparison, ...]
    thresholds: regression.Thresholds

    @property
    def verdict(self) -> str:
        gating = [c.result.verdict for c in self.comparisons if c.gating]
        if regression.REGRESSION in gating:
            return regression.REGRESSION
        if regression.IMPROVEMENT in gating:
            return regression.IMPROVEMENT
        return regression.NO_CHANGE

    @property
    def exit_status(self) -> int:
        return 1 if self.verdict == regression.REGRESSION else 0


def compare_runs(
    baseline: Run,
    candidates: Sequence[Run],
    thresholds: regression.Thresholds = regression.Thresholds(),
    gates: Iterable[str] = DEFAULT_GATES,
) -> Report:
    gates = set(gates)
    comparisons = []
    for candidate in candidates:
        common = [key for key in baseline.workloads if key in candidate.workloads]
        if not common:
            raise UnusableInput(f"{candidate.label} has no metadata workload in common with "
                                f"{baseline.label}")
        for key in common:
            base, cand = baseline.workloads[key], candidate.workloads[key]
            for metric in METRICS:
                limits = thresholds
                if metric.absolute is not None:
                    limits = dataclasses.replace(thresholds, absolute=metric.absolute)
                before, after = base.values(metric), cand.values(metric)
                if metric.name in gates:
                    _require_values(metric, (baseline, base, before), (candidate, cand, after))
                elif not before and not after and (base.migrations or cand.migrations):
                    continue  # e.g. network downtime of runs without the network meter
                result = regression.compare(before, after, limits)
                comparisons.append(MetricComparison(key, metric, candidate.label, result,
                                                    metric.name in gates))
    return Report(baseline, tuple(candidates), tuple(comparisons), thresholds)


def _require_values(metric: Metric, *sides: tuple[Run, WorkloadRun, list[float]]) -> None:
    """A gating metric must be measured wherever migrations were: never a silent pass."""
    for run, workload, values in sides:
        if workload.migrations and not values:
            raise UnusableInput(
                f"--gate {metric.name}: {run.label} has no {metric.title.lower()} for "
                f"{workload.key}"
                + (" (its task ran without the network meter: network_probe none)"
                   if metric.name.startswith("network") else ""))


# -- Output ------------------------------------------------------------------


def _fmt(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.2f}{unit}" if unit else f"{value:.2f}"


def format_text(result: Report) -> str:
    t = result.thresholds
    lines = [
        f"baseline: {result.baseline.label} (task {result.baseline.task_uuid})",
        *(f"candidate: {c.label} (task {c.task_uuid})" for c in result.candidates),
        f"change = median(candidate) - median(baseline), {t.confidence:.0%} percentile-bootstrap "
        f"interval; a verdict needs the interval to exclude 0 and the change to exceed "
        f"{t.absolute:g} s (1 outage for counts) and {t.relative:.0%}",
        "",
    ]
    for workload in result.baseline.workloads:
        rows = [c for c in result.comparisons if c.workload == workload]
        if not rows:
            continue
        lines.append(workload)
        base_run = result.baseline.workloads[workload]
        for candidate in result.candidates:
            cand_run = candidate.workloads.get(workload)
            if cand_run is None:
                continue
            lines.append(f"  SLA breaches: baseline {len(base_run.sla_failures)}, "
                         f"{candidate.label} {len(cand_run.sla_failures)}"
                         + "".join(f"\n    {candidate.label}: {f}" for f in cand_run.sla_failures))
        header = (f"  {'metric':38s} {'run':>10s} {'n':>4s} {'median':>8s} {'p95':>8s} "
                  f"{'max':>8s}  change [interval]  verdict")
        lines.append(header)
        for comparison in rows:
            metric, res = comparison.metric, comparison.result
            unit = metric.unit
            gate = "" if comparison.gating else " (not gating)"
            for name, summary in (("baseline", res.baseline), ("candidate", res.candidate)):
                prefix = f"  {metric.title if name == 'baseline' else '':38s}"
                lines.append(f"{prefix} {name:>10s} {summary.count:4d} {_fmt(summary.median):>8s} "
                             f"{_fmt(summary.p95):>8s} {_fmt(summary.max):>8s}"
                             + ("" if name == "baseline" else
                                f"  {_change(res, unit)}  {res.verdict}{gate}"))
        lines.append("")
    lines.append(f"verdict: {result.verdict}")
    return "\n".join(lines)


def _change(res: regression.Comparison, unit: str) -> str:
    if res.change is None:
        return f"n/a ({res.reason})"
    low, high = res.interval
    return f"{res.change:+.2f}{unit} [{low:+.2f}, {high:+.2f}]"


def to_json(result: Report) -> dict:
    def summary(s: regression.Summary) -> dict:
        return dataclasses.asdict(s)

    return {
        "verdict": result.verdict,
        "baseline": {"label": result.baseline.label, "task": result.baseline.task_uuid},
        "candidates": [{"label": c.label, "task": c.task_uuid} for c in result.candidates],
        "thresholds": dataclasses.asdict(result.thresholds),
        "method": "difference of medians, percentile bootstrap confidence interval",
        "comparisons": [
            {
                "workload": c.workload,
                "metric": c.metric.name,
                "unit": c.metric.unit,
                "candidate": c.candidate,
                "gating": c.gating,
                "baseline": summary(c.result.baseline),
                "candidate_summary": summary(c.result.candidate),
                "change": c.result.change,
                "interval": list(c.result.interval) if c.result.interval else None,
                "relative_change": (None if c.result.relative_change in (None, float("inf"))
                                    else c.result.relative_change),
                "verdict": c.result.verdict,
                "reason": c.result.reason,
            }
            for c in result.comparisons
        ],
        "sla_breaches": {
            run.label: {key: list(w.sla_failures) for key, w in run.workloads.items()}
            for run in (result.baseline, *result.candidates)
        },
    }
