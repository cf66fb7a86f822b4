"""One iteration's metadata-downtime figures, as Rally output charts and back.

This module defines the format of what the scenario adds to an iteration's
``output`` in exactly one place: :func:`summarize` turns the guest meter's log
and the controller's observations of each migration into figures,
:func:`charts` turns figures into Rally chart dicts, and :func:`extract`
reads the figures back from an iteration's ``output`` (for the SLA and for
tools that compare runs).

Pure: no Rally imports, no I/O.

Time conventions.  Every time in :class:`MigrationObservation` is on the
guest clock (``/proc/uptime`` seconds), like the meter's log.  A migration's
*attribution window* runs from its request until the next migration's
request (the last one until the end of the measurement), so an outage that
starts late, after nova reported the migration done, is still charged to the
migration that caused it.  Outages before the healthy baseline are the meter
warming up and are not counted; outages after the baseline but before the
first migration count in the iteration total only.

The network meter's log (the controller probing the guest's address, see
``network_probe``) is on the controller's monotonic clock; its outages are
attributed to the same migrations through the controller time of each
request (``MigrationObservation.controller_requested_at``), by the same
analysis.  Offsets from the request compare across the two clocks; a real
guest's clock stops while it is paused, so a metadata event after the
switchover reads up to the estimated pause earlier than the controller saw it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Optional, Sequence

from rally_metadata_plugin.core import log_analysis as analysis

# -- Chart titles: an interface (reports, trends, the SLA, compare tools) ----

#: The scenario whose output this module writes and reads (Rally plugin name).
SCENARIO_NAME = "MetadataDowntime.boot_and_live_migrate"

DOWNTIME_TITLE = "Metadata downtime per iteration"
OUTAGES_TITLE = "Metadata outages per iteration"
PER_MIGRATION_TITLE = "Metadata downtime per migration"
MIGRATION_TIMES_TITLE = "Live migration duration and guest pause"
TIMELINE_TITLE = "Metadata probes during the iteration (guest clock)"
MIGRATIONS_TITLE = "Live migrations"
NOTES_TITLE = "Metadata meter notes"
NETWORK_DOWNTIME_TITLE = "Network downtime per iteration"

#: Additive charts, always emitted in this order, with the network meter or without.
ADDITIVE_TITLES = (DOWNTIME_TITLE, OUTAGES_TITLE, PER_MIGRATION_TITLE, MIGRATION_TIMES_TITLE,
                   NETWORK_DOWNTIME_TITLE)

# Series / row names inside the charts.
TOTAL_DOWNTIME = "total downtime"
LONGEST_OUTAGE = "longest outage"
OUTAGE_COUNT = "outages"
MEASURED_MIGRATIONS = "migrations measured"
ALL_MIGRATIONS = "all migrations"
MIGRATION_DURATION = "live migration (nova)"
GUEST_PAUSE = "estimated guest pause"
PROBE_SERIES = "metadata answered (1) / failed (0)"
WINDOW_SERIES = "live migration until recovery"


def migration_row_name(index: int) -> str:
    return f"migration {index}"


#: Columns of the migrations table: (key, header).  Headers are what users
#: read; keys are what :func:`extract` returns.
MIGRATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("index", "#"),
    ("source_host", "Source host"),
    ("target_host", "Target host"),
    ("duration", "Live migration (s)"),
    ("downtime", "Downtime (s)"),
    ("downtime_error", "Downtime error bound ± (s)"),
    ("max_outage", "Longest outage (s)"),
    ("outage_count", "Outages"),
    ("first_failure", "First failure after request (s)"),
    ("recovery", "Recovered after request (s)"),
    ("pause", "Estimated pause (s)"),
    ("pause_error", "Pause error bound ± (s)"),
    ("ongoing", "Ongoing"),
    ("network_downtime", "Network downtime (s)"),
    ("network_downtime_error", "Network downtime error bound ± (s)"),
    ("network_max_outage", "Longest network outage (s)"),
    ("network_lost", "Network lost after request (s)"),
    ("network_recovered", "Network recovered after request (s)"),
    ("metadata_lost_after_network", "Metadata lost after network (s)"),
    ("metadata_recovered_after_network", "Metadata recovered after network (s)"),
    ("network_ongoing", "Network ongoing"),
    ("status", "Status"),
    ("server", "Server"),
)

STATUS_OK = "ok"
STATUS_NOT_RECOVERED = "not recovered before the recovery timeout"
#: A migration whose status starts with this failed (rejected, ERROR, rolled
#: back, timed out, or its recovery could not be observed): it is shown in
#: the migrations table but left out of every downtime figure.
STATUS_FAILED_PREFIX = "failed: "


# -- Data --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MigrationObservation:
    """What the controller saw of one live migration.

    ``requested_at`` and ``finished_at`` are guest-clock times: the request
    and the moment the controller confirmed metadata recovery, gave up
    waiting, or the migration failed.  ``duration`` is controller seconds from
    the request until nova showed the server ACTIVE on another host.
    """

    index: int
    source_host: str
    requested_at: float
    target_host: Optional[str] = None
    finished_at: Optional[float] = None
    duration: Optional[float] = None
    pause: Optional[float] = None
    pause_error: Optional[float] = None
    recovered: bool = False
    error: Optional[str] = None
    server: Optional[str] = None
    #: The request on the controller's monotonic clock (the network meter's).
    controller_requested_at: Optional[float] = None

    @property
    def status(self) -> str:
        if self.error:
            return f"{STATUS_FAILED_PREFIX}{self.error}"
        return STATUS_OK if self.recovered else STATUS_NOT_RECOVERED


@dataclasses.dataclass(frozen=True)
class MigrationFigures:
    """One row of the migrations table.  Seconds; ``None`` = not applicable."""

    index: int
    source_host: Optional[str] = None
    target_host: Optional[str] = None
    duration: Optional[float] = None
    downtime: float = 0.0
    downtime_error: float = 0.0
    max_outage: float = 0.0
    outage_count: int = 0
    first_failure: Optional[float] = None
    recovery: Optional[float] = None
    pause: Optional[float] = None
    pause_error: Optional[float] = None
    ongoing: bool = False
    status: str = STATUS_OK
    server: Optional[str] = None
    #: Network meter figures (controller clock); ``None``: the meter was off or
    #: had no baseline.  Offsets are from the request; the two ``*_after_network``
    #: are metadata's offset minus the network's (positive: metadata later).
    network_downtime: Optional[float] = None
    network_downtime_error: Optional[float] = None
    network_max_outage: Optional[float] = None
    network_lost: Optional[float] = None
    network_recovered: Optional[float] = None
    metadata_lost_after_network: Optional[float] = None
    metadata_recovered_after_network: Optional[float] = None
    network_ongoing: Optional[bool] = None

    @property
    def failed(self) -> bool:
        """The migration failed: a row of the table, never a downtime sample."""
        return isinstance(self.status, str) and self.status.startswith(STATUS_FAILED_PREFIX)


@dataclasses.dataclass(frozen=True)
class IterationFigures:
    """An iteration's totals and its migrations table.

    ``migrations`` are the table's rows, failed migrations included.  The
    totals count the outages after the healthy baseline except those charged
    to a failed migration.  ``measured`` is false when the iteration produced
    no usable measurement: it failed before the baseline, before any
    migration was requested, or every migration it requested failed.
    """

    measured: bool
    total_downtime: float = 0.0
    max_outage: float = 0.0
    outage_count: int = 0
    migrations: tuple[MigrationFigures, ...] = ()
    #: The network meter's totals, like the metadata ones; ``None``: it was off.
    network_downtime: Optional[float] = None
    network_max_outage: Optional[float] = None

    @property
    def measured_migrations(self) -> tuple[MigrationFigures, ...]:
        """The migrations that count: every row but the failed ones."""
        return tuple(m for m in self.migrations if not m.failed)

    @property
    def network_measured_migrations(self) -> tuple[MigrationFigures, ...]:
        """The migrations with a network measurement that counts."""
        return tuple(m for m in self.measured_migrations if m.network_downtime is not None)

    @property
    def network_measured(self) -> bool:
        """The network meter measured at least one migration that counts."""
        return bool(self.network_measured_migrations)


@dataclasses.dataclass(frozen=True)
class NetworkMeasurement:
    """What the network meter produced in one iteration; times on the controller clock.

    ``log_text`` None: the meter never ran.  ``baseline_at``: when its healthy
    baseline was confirmed (None: never; nothing is counted).  ``cutoff``: when
    measuring ended early (a recovery timeout).
    """

    log_text: Optional[str]
    target: str
    baseline_at: Optional[float] = None
    cutoff: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class IterationReport:
    """Figures plus what only the per-iteration charts show."""

    figures: IterationFigures
    timeline: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()
    notes: tuple[str, ...] = ()


# -- From a meter log to figures ---------------------------------------------


def _rounded(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(value, digits)


def _step_points(records: Sequence[analysis.ProbeRecord], origin: float):
    """Probe verdicts as a step line: only the first and last probe of each run."""
    points: list[tuple[float, float]] = []
    i = 0
    while i < len(records):
        j = i
        while j + 1 < len(records) and records[j + 1].ok == records[i].ok:
            j += 1
        value = 1.0 if records[i].ok else 0.0
        points.append((round(records[i].start - origin, 3), value))
        if j != i:
            points.append((round(records[j].start - origin, 3), value))
        i = j + 1
    return tuple(points)


def _window_points(observations, origin: float, end: float):
    points: list[tuple[float, float]] = [(0.0, 0.0)]
    for obs in observations:
        start = round(obs.requested_at - origin, 3)
        stop = round((obs.finished_at if obs.finished_at is not None else end) - origin, 3)
        points += [(start, 0.0), (start, 0.5), (max(start, stop), 0.5), (max(start, stop), 0.0)]
    points.append((round(end - origin, 3), 0.0))
    return tuple(points)


def _reason_summary(outages: Iterable[analysis.Outage]) -> str:
    counts: dict[str, int] = {}
    for outage in outages:
        for reason, count in outage.reasons:
            counts[reason] = counts.get(reason, 0) + count
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return ", ".join(f"{analysis.describe_reason(r)} ({n})" for r, n in ranked)


@dataclasses.dataclass(frozen=True)
class _Attributed:
    """One meter log's outages after its baseline, attributed to the migrations."""

    log: analysis.MeterLog
    records: tuple[analysis.ProbeRecord, ...]
    outages: tuple[analysis.Outage, ...]
    after_baseline: tuple[analysis.Outage, ...]
    attribution: analysis.Attribution
    #: the outages that count: after the baseline, not charged to a failed migration
    counted: tuple[analysis.Outage, ...]
    end: float


def _attribute_log(log: analysis.MeterLog, observations: Sequence[MigrationObservation],
                   requests: Sequence[float], *, baseline_at: Optional[float],
                   cutoff: Optional[float], slack: float) -> _Attributed:
    """What :func:`summarize` does with either meter's log; ``requests`` are the
    migrations' request times on that log's clock."""
    records = tuple(r for r in log.records if cutoff is None or r.start <= cutoff)
    until = cutoff if cutoff is not None else log.stopped_at
    outages = tuple(analysis.find_outages(records, until))
    after_baseline = () if baseline_at is None else tuple(o for o in outages
                                                          if o.start >= baseline_at)
    end = max([r.end for r in records] + [until or 0.0]) if records else (until or 0.0)
    # A migration owns the outages from its request until the next request.
    ends = list(requests[1:]) + [max([end] + list(requests))]
    windows = [
        analysis.Window(start, window_end, migration_row_name(obs.index))
        for obs, start, window_end in zip(observations, requests, ends)
    ]
    attribution = analysis.attribute(after_baseline, windows, slack=slack)
    # A failed migration measured nothing: its outages stay out of the totals.
    left_out = {id(o) for obs, report in zip(observations, attribution.windows) if obs.error
                for o in report.outages}
    counted = tuple(o for o in after_baseline if id(o) not in left_out)
    return _Attributed(log, records, outages, after_baseline, attribution, counted, end)


def summarize(
    log_text: Optional[str],
    observations: Sequence[MigrationObservation],
    *,
    baseline_at: Optional[float],
    cutoff: Optional[float] = None,
    slack: float = 0.0,
    notes: Sequence[str] = (),
    network: Optional[NetworkMeasurement] = None,
) -> IterationReport:
    """Figures for one iteration.

    :param log_text: the meter's log (``None``: the meter never ran)
    :param observations: the migrations that were requested, in order
    :param baseline_at: guest time at which the healthy baseline was
        confirmed (``None``: never); earlier outages are not counted
    :param cutoff: guest time at which measuring ended early (a recovery
        timeout); later probes are ignored and an outage going on then counts
        up to it as ongoing
    :param slack: clock-mapping error, widens attribution windows
    :param notes: extra sentences for the notes chart
    :param network: the network meter's log and times (``None``: it was off)
    """
    extra_notes = list(notes)
    if log_text is None:
        figures = IterationFigures(measured=False,
                                   network_downtime=None if network is None else 0.0,
                                   network_max_outage=None if network is None else 0.0)
        return IterationReport(figures, (), tuple(extra_notes) or (
            "No measurement: the iteration ended before the guest meter ran.",))
    log = analysis.parse_log(log_text)
    metadata = _attribute_log(log, observations, [obs.requested_at for obs in observations],
                              baseline_at=baseline_at, cutoff=cutoff, slack=slack)
    measured = baseline_at is not None and any(not obs.error for obs in observations)
    migrations = tuple(
        _migration_figures(obs, report)
        for obs, report in zip(observations, metadata.attribution.windows)
    )
    net = _network_attribution(network, observations)
    if net is not None and network.baseline_at is not None:
        migrations = tuple(_with_network(m, report)
                           for m, report in zip(migrations, net.attribution.windows))
    counted = metadata.counted
    net_counted = net.counted if net is not None else ()
    figures = IterationFigures(
        measured=measured,
        total_downtime=round(analysis.total_downtime(counted), 3),
        max_outage=round(analysis.longest_outage(counted), 3),
        outage_count=len(counted),
        migrations=migrations if baseline_at is not None else (),
        network_downtime=None if network is None else round(
            analysis.total_downtime(net_counted), 3),
        network_max_outage=None if network is None else round(
            analysis.longest_outage(net_counted), 3),
    )

    records, end = metadata.records, metadata.end
    timeline: tuple = ()
    if records:
        origin = records[0].start
        timeline = ((PROBE_SERIES, _step_points(records, origin)),)
        if observations:
            timeline += ((WINDOW_SERIES, _window_points(observations, origin, end)),)

    all_notes = _notes(log, records, metadata.outages, metadata.after_baseline,
                       metadata.attribution, observations, baseline_at, cutoff, extra_notes)
    if network is not None:
        all_notes += _network_notes(network, net)
    return IterationReport(figures, timeline, tuple(all_notes))


def _network_attribution(network: Optional[NetworkMeasurement],
                         observations: Sequence[MigrationObservation]) -> Optional[_Attributed]:
    if network is None or network.log_text is None:
        return None
    if any(obs.controller_requested_at is None for obs in observations):
        raise ValueError("a migration observation lacks its controller request time")
    return _attribute_log(analysis.parse_log(network.log_text), observations,
                          [obs.controller_requested_at for obs in observations],
                          baseline_at=network.baseline_at, cutoff=network.cutoff,
                          slack=CONTROLLER_SLACK)


#: Attribution slack for the network meter: its records and the requests share
#: one clock, so only the record's own rounding matters.
CONTROLLER_SLACK = 0.001


def _difference(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else round(a - b, 3)


def _with_network(migration: MigrationFigures, report: analysis.WindowReport) -> MigrationFigures:
    lost, recovered = report.first_failure_offset, report.recovery_offset
    return dataclasses.replace(
        migration,
        network_downtime=round(report.downtime, 3),
        network_downtime_error=round(report.downtime_error, 3),
        network_max_outage=round(report.max_outage, 3),
        network_lost=_rounded(lost),
        network_recovered=_rounded(recovered),
        metadata_lost_after_network=_difference(migration.first_failure, lost),
        metadata_recovered_after_network=_difference(migration.recovery, recovered),
        network_ongoing=report.ongoing,
    )


def _network_notes(network: NetworkMeasurement, net: Optional[_Attributed]) -> list[str]:
    where = f"Network ({network.target})"
    if net is None:
        return [f"{where}: no measurement, the network meter never ran."]
    notes = []
    if net.log.fatal:
        notes.append(f"{where}: the meter gave up: {net.log.fatal}.")
    if not net.records:
        notes.append(f"{where}: the meter wrote no probe records.")
    if network.baseline_at is None:
        notes.append(f"{where}: no healthy baseline before the first migration: nothing was "
                     f"counted" + (f" (failures: {_reason_summary(net.outages)})."
                                   if net.outages else "."))
        return notes
    if net.attribution.unattributed:
        total = analysis.total_downtime(net.attribution.unattributed)
        notes.append(f"{where}: {len(net.attribution.unattributed)} outage(s) ({total:.3f} s) "
                     f"before the first migration; they count in the iteration total only.")
    for report in net.attribution.windows:
        if report.outages:
            notes.append(f"{where}, {report.window.label}: {_reason_summary(report.outages)}.")
    if network.cutoff is not None:
        notes.append(f"{where}: measuring stopped at the recovery timeout; an outage still "
                     f"going on then is marked ongoing and counted up to that moment.")
    if net.log.skipped_lines:
        notes.append(f"{where}: {net.log.skipped_lines} unreadable log line(s) were skipped.")
    return notes


def _migration_figures(
    obs: MigrationObservation, report: analysis.WindowReport
) -> MigrationFigures:
    return MigrationFigures(
        index=obs.index,
        source_host=obs.source_host,
        target_host=obs.target_host,
        duration=_rounded(obs.duration),
        downtime=round(report.downtime, 3),
        downtime_error=round(report.downtime_error, 3),
        max_outage=round(report.max_outage, 3),
        outage_count=len(report.outages),
        first_failure=_rounded(report.first_failure_offset),
        recovery=_rounded(report.recovery_offset),
        pause=_rounded(obs.pause),
        pause_error=_rounded(obs.pause_error),
        ongoing=report.ongoing,
        status=obs.status,
        server=obs.server,
    )


def _notes(log, records, outages, counted, attribution, observations, baseline_at, cutoff,
           extra) -> list[str]:
    notes = list(extra)
    if log.fatal:
        notes.append(f"The meter gave up: {log.fatal}.")
    if not records:
        notes.append("The meter wrote no probe records.")
    if baseline_at is None and records:
        notes.append(
            "No healthy baseline: nothing was counted."
            + (f" Failures: {_reason_summary(outages)}." if outages else "")
        )
    ignored = [o for o in outages if o not in counted]
    if baseline_at is not None and ignored:
        notes.append(
            f"{len(ignored)} outage(s) before the healthy baseline were not counted "
            f"({_reason_summary(ignored)})."
        )
    if attribution.unattributed:
        total = analysis.total_downtime(attribution.unattributed)
        notes.append(
            f"{len(attribution.unattributed)} outage(s) ({total:.3f} s) happened after the "
            f"baseline but before the first migration; they count in the iteration total only."
        )
    for obs, report in zip(observations, attribution.windows):
        if report.outages:
            notes.append(f"{report.window.label}: {_reason_summary(report.outages)}.")
        if obs.error:
            lost = (f"; its {len(report.outages)} outage(s) "
                    f"({analysis.total_downtime(report.outages):.3f} s) are not counted"
                    if report.outages else "")
            notes.append(f"{report.window.label} failed, so it is left out of the downtime "
                         f"figures and the SLA{lost}.")
    if analysis.rate_limited(counted):
        notes.append(
            "The metadata service answered HTTP 429: neutron's metadata rate limiting is "
            "enabled, so part of this 'downtime' is the probe rate, not an outage. Raise "
            "probe_interval or the rate limit."
        )
    if cutoff is not None:
        notes.append(
            "Measuring stopped at the recovery timeout; an outage still going on then is "
            "marked ongoing and counted up to that moment."
        )
    if log.skipped_lines:
        notes.append(f"{log.skipped_lines} unreadable log line(s) were skipped.")
    return notes


# -- Figures to Rally output --------------------------------------------------


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "n/a" if value is None else value


def charts(report: IterationReport) -> tuple[list[dict], list[dict]]:
    """``(additive, complete)`` chart dicts for ``Scenario.add_output``.

    The additive charts are the same five, in the same order, for every
    iteration, measured or not, with the network meter or without (Rally
    matches them by position); without the network meter its chart has no
    points.
    """
    figures = report.figures
    measured = figures.measured_migrations
    per_migration = [[ALL_MIGRATIONS, m.downtime] for m in measured]
    per_migration += [[migration_row_name(m.index), m.downtime] for m in measured]
    times = [[MIGRATION_DURATION, m.duration] for m in measured if m.duration is not None]
    times += [[GUEST_PAUSE, m.pause] for m in measured if m.pause is not None]
    additive = [
        {
            "title": DOWNTIME_TITLE,
            "description": "Total metadata downtime seen from inside the guest after the "
            "healthy baseline, and the longest single outage; failed migrations are left out. "
            "0 with 'migrations measured' 0 means the iteration failed before measuring or "
            "every migration it requested failed.",
            "chart_plugin": "Lines",
            "data": [[TOTAL_DOWNTIME, figures.total_downtime],
                     [LONGEST_OUTAGE, figures.max_outage]],
            "label": "seconds",
        },
        {
            "title": OUTAGES_TITLE,
            "description": "Number of metadata outages after the healthy baseline, and the "
            "number of live migrations measured in the iteration (failed ones are not).",
            "chart_plugin": "Lines",
            "data": [[OUTAGE_COUNT, figures.outage_count],
                     [MEASURED_MIGRATIONS, len(measured)]],
            "label": "count",
        },
        {
            "title": PER_MIGRATION_TITLE,
            "description": "Metadata downtime charged to each live migration (from its request "
            "until the next one), over all migrations and per position in the loop. Failed "
            "migrations are not samples.",
            "chart_plugin": "StatsTable",
            "data": per_migration,
        },
        {
            "title": MIGRATION_TIMES_TITLE,
            "description": "Live migration duration as nova reports it (request until ACTIVE "
            "on another host) and the guest pause estimated from the guest clock.",
            "chart_plugin": "StatsTable",
            "data": times,
        },
        {
            "title": NETWORK_DOWNTIME_TITLE,
            "description": "Total network downtime of the guest's address as the Rally host "
            "saw it (network_probe: ICMP echo, or TCP connect to the SSH port) after the "
            "network's healthy baseline, and its longest single outage; failed migrations are "
            "left out. No points: the network meter was off (network_probe none).",
            "chart_plugin": "Lines",
            "data": [] if figures.network_downtime is None else [
                [TOTAL_DOWNTIME, figures.network_downtime],
                [LONGEST_OUTAGE, figures.network_max_outage or 0.0]],
            "label": "seconds",
        },
    ]
    complete = []
    if report.timeline:
        complete.append({
            "title": TIMELINE_TITLE,
            "description": "Each probe's verdict (1 = this instance's metadata answered, 0 = "
            "failure) and the live migration windows (0.5, request until metadata recovered).",
            "chart_plugin": "Lines",
            "data": [[name, [list(p) for p in points]] for name, points in report.timeline],
            "label": "probe verdict / migration window",
            "axis_label": "seconds since the first probe (guest clock)",
        })
    complete.append({
        "title": MIGRATIONS_TITLE,
        "description": "Offsets are seconds after the migration request. A migration owns the "
        "outages from its request until the next request; a failed migration (Status "
        "'failed: ...') is shown but counted nowhere. The pause is controller-elapsed minus "
        "guest-elapsed time across the migration: the time the guest was frozen. Network "
        "columns: the Rally host probing the guest's address (n/a without the network meter); "
        "'Metadata lost/recovered after network' is the metadata offset minus the network "
        "one: positive when metadata came back later than the network (a metadata-path "
        "problem), near zero when it followed the network (the guest was off the network). "
        "Metadata offsets are on the guest clock, which a real guest stops while paused.",
        "chart_plugin": "Table",
        "data": {
            "cols": [header for _, header in MIGRATION_COLUMNS],
            "rows": [[_cell(getattr(m, key)) for key, _ in MIGRATION_COLUMNS]
                     for m in figures.migrations],
        },
    })
    if report.notes:
        complete.append({
            "title": NOTES_TITLE,
            "chart_plugin": "TextArea",
            "data": list(report.notes),
        })
    return additive, complete


# -- Rally output back to figures ---------------------------------------------


def _by_title(charts_: Iterable[Any], title: str) -> Optional[Mapping]:
    for chart in charts_ or ():
        if isinstance(chart, Mapping) and chart.get("title") == title:
            return chart
    return None


def _series(chart: Optional[Mapping]) -> dict[str, float]:
    values: dict[str, float] = {}
    for item in (chart or {}).get("data") or ():
        if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
            if isinstance(item[1], (int, float)) and not isinstance(item[1], bool):
                values.setdefault(item[0], float(item[1]))
    return values


def _uncell(key: str, value: Any) -> Any:
    if value == "n/a":
        return None
    if key in ("ongoing", "network_ongoing"):
        return value in ("yes", True)
    if key in ("index", "outage_count"):
        return int(value)
    if key in ("source_host", "target_host", "status", "server"):
        return None if value is None else str(value)
    return None if value is None else float(value)


def _migrations_from_table(chart: Optional[Mapping]) -> tuple[MigrationFigures, ...]:
    if not chart:
        return ()
    data = chart.get("data") or {}
    keys = {header: key for key, header in MIGRATION_COLUMNS}
    columns = [keys.get(header) for header in data.get("cols", ())]
    rows = []
    for row in data.get("rows", ()):
        fields = {key: _uncell(key, cell) for key, cell in zip(columns, row) if key}
        rows.append(MigrationFigures(**{k: v for k, v in fields.items() if v is not None}))
    return tuple(rows)


def extract(output: Optional[Mapping]) -> Optional[IterationFigures]:
    """The figures an iteration's ``output`` carries, or ``None`` if it carries none.

    ``output`` is the iteration's ``{"additive": [...], "complete": [...]}``
    as stored by Rally.  Charts are found by title, so other plugins' charts
    (e.g. OSProfiler's) do not disturb it.
    """
    if not isinstance(output, Mapping):
        return None
    additive = output.get("additive") or ()
    downtime = _series(_by_title(additive, DOWNTIME_TITLE))
    outages = _series(_by_title(additive, OUTAGES_TITLE))
    if TOTAL_DOWNTIME not in downtime or MEASURED_MIGRATIONS not in outages:
        return None
    try:
        table = _by_title(output.get("complete") or (), MIGRATIONS_TITLE)
        migrations = _migrations_from_table(table)
    except (TypeError, ValueError):
        migrations = ()
    # Older outputs counted failed migrations as measured: trust the table.
    measured = outages[MEASURED_MIGRATIONS] > 0 and (
        not migrations or any(not m.failed for m in migrations))
    network = _series(_by_title(additive, NETWORK_DOWNTIME_TITLE))
    return IterationFigures(
        measured=measured,
        total_downtime=downtime[TOTAL_DOWNTIME],
        max_outage=downtime.get(LONGEST_OUTAGE, 0.0),
        outage_count=int(outages.get(OUTAGE_COUNT, 0)),
        migrations=migrations,
        network_downtime=network.get(TOTAL_DOWNTIME),
        network_max_outage=network.get(LONGEST_OUTAGE),
    )
