"""Turn a guest meter log into outages with honest error bounds.

A probe *observes* the service at the moment it sends its request, which the
log gives as the probe's ``start`` (a request lost to a dropped SYN fails
because of what happened at that moment, however long the client then waits).
An outage is a maximal run of failed probes, in probe order.  Its true start
lies between the last good probe before it and its first failed probe, its
true end between its last failed probe and the next good one, so:

* ``lower``    = last failed start - first failed start
* ``upper``    = next good start - last good start
* ``duration`` = the distance between the two edge midpoints, which always
  lies inside ``[lower, upper]``.

Both bounds are widened by the ``/proc/uptime`` resolution.  An outage that
is still going on when the log ends is ``ongoing``: it counts up to the time
the log was read (``until``), never as zero.

Nothing here does I/O or knows about Rally.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import re
import statistics
from typing import Iterable, Optional, Sequence

#: ``/proc/uptime`` has a resolution of 10 ms.
CLOCK_RESOLUTION = 0.01

_RECORD = re.compile(
    r"^(?P<seq>\d+) (?P<start>\d+(?:\.\d+)?) (?P<end>\d+(?:\.\d+)?) "
    r"(?P<verdict>[PF]) (?P<reason>[A-Za-z0-9:_.-]+)$"
)
_REASON = re.compile(r"^[A-Za-z0-9:_.-]+$")
_EVENT = re.compile(r"^#(?P<name>[a-z]+) (?P<time>\d+(?:\.\d+)?)(?: (?P<detail>.*))?$")

#: Human-readable meaning of the failure reasons the guest script writes.
_CURL_ERRORS = {
    "6": "could not resolve host",
    "7": "connection failed (refused or unreachable)",
    "28": "timed out",
    "52": "empty reply",
    "56": "connection reset",
}

#: The same for the network meter's probes from the controller.
_TCP_ERRORS = {
    "refused": "connection refused",
    "timeout": "no answer within the probe timeout",
    "unreachable": "host or network unreachable",
    "reset": "connection reset",
}
_ICMP_ERRORS = {
    "timeout": "no reply within the probe timeout",
    "error": "ping failed (unreachable, or no route)",
}


def format_record(record: "ProbeRecord") -> str:
    """One record as a log line (newline included), the format :class:`LogParser` reads.

    The guest meter writes the same line from ``sh`` (see ``probe_script``).
    """
    if not _REASON.match(record.reason):
        raise ValueError(f"a reason is one word of [A-Za-z0-9:_.-], got {record.reason!r}")
    verdict = "P" if record.ok else "F"
    return f"{record.seq} {record.start:.3f} {record.end:.3f} {verdict} {record.reason}\n"


def format_event(name: str, time: float, detail: str = "") -> str:
    """One meter event (``#start``, ``#stop``, ``#fatal``) as a log line."""
    if not re.match(r"^[a-z]+$", name) or "\n" in detail:
        raise ValueError(f"bad meter event {name!r} {detail!r}")
    return f"#{name} {time:.3f}" + (f" {detail}" if detail else "") + "\n"


def describe_reason(reason: str) -> str:
    """A sentence fragment for a reason code from the log."""
    if reason == "ok":
        return "ok"
    if reason == "content":
        return "HTTP 200 with unexpected content (another instance's data?)"
    kind, _, detail = reason.partition(":")
    if kind == "http":
        if detail == "429":
            return "HTTP 429 (metadata rate limiting is enabled in neutron)"
        return f"HTTP {detail}"
    if kind == "curl":
        return f"curl: {_CURL_ERRORS.get(detail, 'exit status ' + detail)}"
    if kind == "wget":
        return f"wget: {detail}"
    if kind == "tcp":
        return f"TCP connect: {_TCP_ERRORS.get(detail, detail)}"
    if kind == "icmp":
        return f"ICMP echo (ping): {_ICMP_ERRORS.get(detail, detail)}"
    return reason


@dataclasses.dataclass(frozen=True)
class ProbeRecord:
    seq: int
    start: float
    end: float
    ok: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class MeterEvent:
    name: str
    time: float
    detail: str


@dataclasses.dataclass(frozen=True)
class MeterLog:
    """A parsed log: probe records in probe order, events, skipped lines."""

    records: tuple[ProbeRecord, ...]
    events: tuple[MeterEvent, ...] = ()
    skipped_lines: int = 0

    @property
    def fatal(self) -> Optional[str]:
        """The meter's own reason for giving up, if it did."""
        for event in self.events:
            if event.name == "fatal":
                return event.detail
        return None

    @property
    def started(self) -> bool:
        return any(event.name == "start" for event in self.events)

    @property
    def stopped_at(self) -> Optional[float]:
        times = [event.time for event in self.events if event.name == "stop"]
        return max(times) if times else None


class LogParser:
    """A meter log parsed as it grows, a chunk of complete lines at a time.

    The controller reads only what the guest appended since its last read;
    this keeps what was parsed so far, so each read costs what is new, not
    the whole log again.  Lines are judged as by :func:`parse_log` (which
    uses this class): records kept in sequence order, the first record of a
    sequence number kept, anything else counted as skipped.
    """

    def __init__(self) -> None:
        self._records: list[ProbeRecord] = []
        self._seqs: list[int] = []  # the records' sequence numbers, for bisect
        self._events: list[MeterEvent] = []
        self._skipped = 0
        self._log: Optional[MeterLog] = None

    def feed(self, lines: str) -> None:
        """Parse ``lines``: complete lines, the last one ending with its newline."""
        if lines and not lines.endswith("\n"):
            raise ValueError("LogParser.feed takes complete lines only")
        for line in lines.split("\n")[:-1]:
            self._parse_line(line.rstrip("\r"))
        self._log = None

    def _parse_line(self, line: str) -> None:
        if not line:
            return
        match = _RECORD.match(line)
        if match:
            self._add_record(ProbeRecord(int(match["seq"]), float(match["start"]),
                                         float(match["end"]), match["verdict"] == "P",
                                         match["reason"]))
            return
        match = _EVENT.match(line)
        if match:
            self._events.append(MeterEvent(match["name"], float(match["time"]),
                                           match["detail"] or ""))
            return
        self._skipped += 1

    def _add_record(self, record: ProbeRecord) -> None:
        # Concurrent probes finish out of order, but mostly in order: append.
        at = len(self._seqs)
        if at and record.seq <= self._seqs[-1]:
            at = bisect.bisect_left(self._seqs, record.seq)
        if record.end < record.start or (at < len(self._seqs) and self._seqs[at] == record.seq):
            self._skipped += 1
            return
        self._seqs.insert(at, record.seq)
        self._records.insert(at, record)

    @property
    def log(self) -> MeterLog:
        """Everything parsed so far."""
        if self._log is None:
            self._log = MeterLog(tuple(self._records), tuple(self._events), self._skipped)
        return self._log


def parse_log(text: str) -> MeterLog:
    """Parse a meter log.  Never raises on bad input.

    A last line without its newline may be half-written and is skipped, as is
    any line that is not a record or an event; both are counted.  Records are
    ordered by sequence number (concurrent probes finish out of order), and a
    sequence number seen twice keeps its first record.
    """
    complete, newline, partial = text.rpartition("\n")
    parser = LogParser()
    parser.feed(complete + newline)
    log = parser.log
    if partial:  # half-written last line
        return dataclasses.replace(log, skipped_lines=log.skipped_lines + 1)
    return log


@dataclasses.dataclass(frozen=True)
class Outage:
    """One maximal run of failed probes.

    ``start``/``end`` are the estimated edges on the guest clock; the true
    duration lies within ``[lower, upper]``.  ``start_known`` is false when
    the log begins with this outage (no good probe before it).
    """

    start: float
    end: float
    lower: float
    upper: float
    ongoing: bool
    first_seq: int
    last_seq: int
    failed_probes: int
    reasons: tuple[tuple[str, int], ...]
    start_known: bool = True

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def error(self) -> float:
        """Largest distance between the estimate and a possible true value."""
        return max(self.duration - self.lower, self.upper - self.duration)

    @property
    def main_reason(self) -> str:
        return self.reasons[0][0] if self.reasons else ""

    def to_dict(self) -> dict:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "duration": round(self.duration, 3),
            "lower": round(self.lower, 3),
            "upper": round(self.upper, 3),
            "error": round(self.error, 3),
            "ongoing": self.ongoing,
            "start_known": self.start_known,
            "failed_probes": self.failed_probes,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "reasons": dict(self.reasons),
        }


def total_downtime(outages: Iterable[Outage]) -> float:
    return sum((o.duration for o in outages), 0.0)


def longest_outage(outages: Iterable[Outage]) -> float:
    return max((o.duration for o in outages), default=0.0)


def rate_limited(outages: Iterable[Outage]) -> bool:
    """True when the service answered 429: neutron's rate limit, not downtime."""
    return any(reason == "http:429" for o in outages for reason, _ in o.reasons)


class OutageTotals:
    """Totals over ``self.outages``, for any collection of outages."""

    outages: tuple[Outage, ...]

    @property
    def downtime(self) -> float:
        return total_downtime(self.outages)

    @property
    def max_outage(self) -> float:
        return longest_outage(self.outages)

    @property
    def ongoing(self) -> bool:
        return any(o.ongoing for o in self.outages)

    @property
    def rate_limited(self) -> bool:
        return rate_limited(self.outages)


@dataclasses.dataclass(frozen=True)
class Analysis(OutageTotals):
    """A whole log's outages and probe counts."""

    outages: tuple[Outage, ...]
    successes: int
    failures: int
    period: Optional[float]
    skipped_lines: int = 0
    first_probe: Optional[float] = None
    last_probe: Optional[float] = None

    @property
    def downtime_lower(self) -> float:
        return sum((o.lower for o in self.outages), 0.0)

    @property
    def downtime_upper(self) -> float:
        return sum((o.upper for o in self.outages), 0.0)

    def to_dict(self) -> dict:
        return {
            "downtime": round(self.downtime, 3),
            "downtime_lower": round(self.downtime_lower, 3),
            "downtime_upper": round(self.downtime_upper, 3),
            "max_outage": round(self.max_outage, 3),
            "outage_count": len(self.outages),
            "ongoing": self.ongoing,
            "rate_limited": self.rate_limited,
            "successes": self.successes,
            "failures": self.failures,
            "period": None if self.period is None else round(self.period, 4),
            "skipped_lines": self.skipped_lines,
            "first_probe": self.first_probe,
            "last_probe": self.last_probe,
            "outages": [o.to_dict() for o in self.outages],
        }


def achieved_period(records: Sequence[ProbeRecord]) -> Optional[float]:
    """Median time between consecutive probe starts (gaps in seq excluded)."""
    gaps = [
        b.start - a.start
        for a, b in zip(records, records[1:])
        if b.seq == a.seq + 1
    ]
    return statistics.median(gaps) if gaps else None


def find_outages(records: Sequence[ProbeRecord], until: Optional[float] = None) -> list[Outage]:
    """Maximal runs of failed probes, as outages with bounds.

    ``until`` is the guest time at which the log was read; an outage still in
    progress then is ongoing and counts up to that time.
    """
    outages = []
    i = 0
    res = CLOCK_RESOLUTION
    while i < len(records):
        if records[i].ok:
            i += 1
            continue
        j = i
        while j + 1 < len(records) and not records[j + 1].ok:
            j += 1
        first, last = records[i], records[j]
        before = records[i - 1] if i > 0 else None
        after = records[j + 1] if j + 1 < len(records) else None
        reasons = collections.Counter(r.reason for r in records[i : j + 1])
        start = (before.start + first.start) / 2 if before else first.start
        lower = max(0.0, last.start - first.start - 2 * res)
        if after:
            end = (last.start + after.start) / 2
            upper_end = after.start
        else:
            # Still going: it lasts at least one clock tick past its last
            # failed probe, however fast that probe failed; never zero.
            reached = max(last.end, last.start + res, until if until is not None else last.end)
            end = reached
            upper_end = reached
        upper_start = before.start if before else first.start
        upper = upper_end - upper_start + 2 * res
        outages.append(
            Outage(
                start=start,
                end=end,
                lower=lower,
                upper=max(upper, end - start),
                ongoing=after is None,
                first_seq=first.seq,
                last_seq=last.seq,
                failed_probes=j - i + 1,
                reasons=tuple(reasons.most_common()),
                start_known=before is not None,
            )
        )
        i = j + 1
    return outages


def analyze(log: MeterLog, until: Optional[float] = None) -> Analysis:
    """The whole log's analysis; see :func:`find_outages` for ``until``."""
    records = log.records
    if until is None and log.stopped_at is not None and records and not records[-1].ok:
        until = log.stopped_at
    successes = sum(1 for r in records if r.ok)
    return Analysis(
        outages=tuple(find_outages(records, until)),
        successes=successes,
        failures=len(records) - successes,
        period=achieved_period(records),
        skipped_lines=log.skipped_lines,
        first_probe=records[0].start if records else None,
        last_probe=records[-1].start if records else None,
    )


def consecutive_successes_at_end(records: Sequence[ProbeRecord]) -> int:
    """How many probes in a row succeeded at the end of the log."""
    count = 0
    for record in reversed(records):
        if not record.ok:
            break
        count += 1
    return count


def first_healthy_streak(
    records: Sequence[ProbeRecord], needed: int, after: float = float("-inf")
) -> Optional[ProbeRecord]:
    """The probe completing the first run of ``needed`` good probes started after ``after``.

    ``records`` are in sequence order, as :class:`MeterLog` keeps them.  Probes
    overlap and each writes its record when it finishes, so a log read while
    probes are in flight can lack a sequence number whose probe may yet fail.
    A run counts only when its sequence numbers are consecutive and no probe
    that may have started after ``after`` is missing before it: then the
    answer is final, it never changes as the missing records arrive.  (A
    missing probe numbered below a record that started before ``after``
    started before ``after`` too, and does not matter.)
    """
    streak = 0
    previous = 0  # sequence numbers start at 1
    for record in records:
        if record.seq != previous + 1 and record.start >= after:
            return None  # a probe in flight may break or complete a run here
        previous = record.seq
        if record.start < after:
            continue
        streak = streak + 1 if record.ok else 0
        if streak >= needed:
            return record
    return None


def earliest_healthy_streak(
    records: Sequence[ProbeRecord], needed: int, interval: float,
    after: float = float("-inf"),
) -> float:
    """The earliest guest time at which :func:`first_healthy_streak` can find its run.

    A lower bound from the records read so far, for a reader that wants to
    look again only when the answer may have changed: the meter starts its
    probes at least ``interval`` apart, and a probe's record cannot end a
    run before that probe started.  Probes missing from ``records`` (in
    flight when the log was read) count as good, so the bound is never
    late; ``-inf`` when the run may be complete already.
    """
    last_seq, last_start = 0, float("-inf")
    good = 0  # the trailing run of good (or missing) probes started after ``after``
    for record in records:
        if record.start >= after:
            good += record.seq - last_seq - 1   # in flight: may have passed
            if good >= needed:
                return float("-inf")
            good = good + 1 if record.ok else 0
            if good >= needed:
                return float("-inf")
        last_seq, last_start = record.seq, record.start
    return max(last_start + (needed - good) * interval,
               after + (needed - 1) * interval)


# -- Attribution of outages to time windows (migrations) --------------------


@dataclasses.dataclass(frozen=True)
class Window:
    """A span of guest time, e.g. one live migration until recovery."""

    start: float
    end: float
    label: str = ""


@dataclasses.dataclass(frozen=True)
class WindowReport(OutageTotals):
    """The outages attributed to one window."""

    window: Window
    outages: tuple[Outage, ...]

    @property
    def downtime_error(self) -> float:
        return sum((o.error for o in self.outages), 0.0)

    @property
    def first_failure_offset(self) -> Optional[float]:
        """Seconds from the window start to the first outage's start."""
        return self.outages[0].start - self.window.start if self.outages else None

    @property
    def recovery_offset(self) -> Optional[float]:
        """Seconds from the window start to the end of its last outage."""
        return self.outages[-1].end - self.window.start if self.outages else None

    def to_dict(self) -> dict:
        def rounded(value: Optional[float]) -> Optional[float]:
            return None if value is None else round(value, 3)

        return {
            "label": self.window.label,
            "window_start": round(self.window.start, 3),
            "window_end": round(self.window.end, 3),
            "downtime": round(self.downtime, 3),
            "downtime_error": round(self.downtime_error, 3),
            "max_outage": round(self.max_outage, 3),
            "outage_count": len(self.outages),
            "ongoing": self.ongoing,
            "first_failure_offset": rounded(self.first_failure_offset),
            "recovery_offset": rounded(self.recovery_offset),
            "outages": [o.to_dict() for o in self.outages],
        }


@dataclasses.dataclass(frozen=True)
class Attribution:
    windows: tuple[WindowReport, ...]
    unattributed: tuple[Outage, ...]


def attribute(
    outages: Iterable[Outage], windows: Sequence[Window], slack: float = 0.0
) -> Attribution:
    """Give each outage to the window it overlaps most.

    ``slack`` widens every window on both sides (e.g. by the clock mapping
    error).  An outage overlapping no window is returned as unattributed; an
    outage is never counted twice.
    """
    buckets: list[list[Outage]] = [[] for _ in windows]
    unattributed = []
    for outage in outages:
        best, best_overlap = None, -1.0
        for index, window in enumerate(windows):
            lo, hi = window.start - slack, window.end + slack
            overlap = min(outage.end, hi) - max(outage.start, lo)
            # A zero-length outage inside a window still belongs to it.
            touches = outage.start <= hi and outage.end >= lo
            if touches and overlap > best_overlap:
                best, best_overlap = index, overlap
        if best is None:
            unattributed.append(outage)
        else:
            buckets[best].append(outage)
    return Attribution(
        tuple(WindowReport(w, tuple(b)) for w, b in zip(windows, buckets)),
        tuple(unattributed),
    )
