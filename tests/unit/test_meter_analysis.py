"""Unit tests of the meter log analysis: parsing, outages, bounds, attribution, clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import clock_mapping as clock
from rally_metadata_plugin.core.log_analysis import (
    CLOCK_RESOLUTION,
    MeterLog,
    Outage,
    ProbeRecord,
    Window,
    analyze,
    attribute,
    find_outages,
    parse_log,
)

RES = CLOCK_RESOLUTION


def rec(seq, start, ok=True, end=None, reason=None):
    return ProbeRecord(seq, start, start + 0.01 if end is None else end, ok,
                       reason or ("ok" if ok else "wget:refused"))


def line(seq, start, ok=True, reason=None, dur=0.01):
    return f"{seq} {start:.2f} {start + dur:.2f} {'P' if ok else 'F'} " \
           f"{reason or ('ok' if ok else 'wget:refused')}\n"


def records_from(pattern, period=0.2, t0=100.0):
    """``pattern`` like 'PPFFP': one probe per character, every ``period`` s."""
    return [rec(i + 1, round(t0 + i * period, 2), c == "P") for i, c in enumerate(pattern)]


# -- parse_log ------------------------------------------------------------------


class TestParseLog:
    def test_empty_log(self):
        log = parse_log("")
        assert log.records == ()
        assert log.events == ()
        assert log.skipped_lines == 0
        assert log.fatal is None
        assert not log.started
        assert log.stopped_at is None
        result = analyze(log)
        assert result.outages == ()
        assert result.downtime == 0.0
        assert result.period is None
        assert result.first_probe is None

    def test_records_and_events(self):
        text = ("#start 10.00 v=1 tool=wget interval=0.2\n"
                + line(1, 10.0) + line(2, 10.2, False, "http:500") + line(3, 10.4)
                + "#stop 10.55 signal\n")
        log = parse_log(text)
        assert [r.seq for r in log.records] == [1, 2, 3]
        assert log.records[1] == ProbeRecord(2, 10.2, 10.21, False, "http:500")
        assert log.started
        assert log.stopped_at == 10.55
        assert log.events[0].detail == "v=1 tool=wget interval=0.2"
        assert log.skipped_lines == 0

    def test_partial_last_line_is_skipped_and_counted(self):
        text = line(1, 10.0) + line(2, 10.2) + "3 10.40 10."
        log = parse_log(text)
        assert [r.seq for r in log.records] == [1, 2]
        assert log.skipped_lines == 1

    def test_partial_last_line_that_looks_complete_is_still_skipped(self):
        # "3 10.40 10.4" could be cut from "3 10.40 10.45 P ok"; without its
        # newline the line is never trusted, even when it parses.
        log = parse_log(line(1, 10.0) + "3 10.40 10.45 F wget:refused")
        assert [r.seq for r in log.records] == [1]
        assert log.skipped_lines == 1
        assert analyze(log).outages == ()

    def test_garbage_lines_are_skipped_and_counted(self):
        text = (line(1, 10.0) + "hello world\n" + "\x00\x00\n" + "2 abc 10.3 P ok\n"
                + "4 10.6 10.5 P ok\n"  # ends before it starts
                + "5 10.8 10.9 X ok\n" + "#STOP 1\n" + line(3, 10.4) + "\n\n")
        log = parse_log(text)
        assert [r.seq for r in log.records] == [1, 3]
        assert log.skipped_lines == 6

    def test_crlf_line_endings(self):
        log = parse_log(line(1, 10.0).replace("\n", "\r\n") + "#stop 10.3 signal\r\n")
        assert len(log.records) == 1
        assert log.stopped_at == 10.3

    def test_duplicate_seq_keeps_first_and_counts(self):
        text = line(1, 10.0) + line(2, 10.2, False) + line(2, 10.2, True) + line(3, 10.4)
        log = parse_log(text)
        assert [(r.seq, r.ok) for r in log.records] == [(1, True), (2, False), (3, True)]
        assert log.skipped_lines == 1

    def test_out_of_order_lines_are_sorted_by_seq(self):
        # Concurrent probes finish out of order: a timed-out probe is logged late.
        text = line(1, 10.0) + line(3, 10.4) + line(4, 10.6) + \
            line(2, 10.2, False, "wget:timeout", dur=1.0) + line(5, 10.8)
        log = parse_log(text)
        assert [r.seq for r in log.records] == [1, 2, 3, 4, 5]
        outages = analyze(log).outages
        assert len(outages) == 1
        assert (outages[0].first_seq, outages[0].last_seq) == (2, 2)

    def test_fatal_event(self):
        log = parse_log("#fatal 5.00 no-http-client neither curl nor wget is installed\n")
        assert log.fatal == "no-http-client neither curl nor wget is installed"
        assert log.records == ()
        assert analyze(log).outages == ()

    def test_stop_event_latest_wins(self):
        log = parse_log("#stop 5.00 duration\n#stop 7.50 signal\n")
        assert log.stopped_at == 7.5

    def test_never_raises_on_random_bytes(self):
        data = bytes(range(256)).decode("latin-1") * 3
        log = parse_log(data)
        assert log.records == ()
        assert log.skipped_lines >= 1


@given(st.text(max_size=400))
def test_parse_log_never_raises(text):
    log = parse_log(text)
    assert log.skipped_lines >= 0
    analyze(log)


# -- find_outages / analyze ---------------------------------------------------------


class TestOutages:
    def test_all_good(self):
        result = analyze(MeterLog(tuple(records_from("PPPPP"))))
        assert result.outages == ()
        assert result.downtime == 0.0
        assert result.successes == 5 and result.failures == 0
        assert result.period == pytest.approx(0.2)
        assert not result.ongoing

    def test_single_failed_probe(self):
        records = records_from("PPFPP")
        (outage,) = find_outages(records)
        # Edges: between 100.2 and 100.4, and between 100.4 and 100.6.
        assert outage.start == pytest.approx(100.3)
        assert outage.end == pytest.approx(100.5)
        assert outage.duration == pytest.approx(0.2)
        assert outage.lower == 0.0
        assert outage.upper == pytest.approx(0.4 + 2 * RES)
        assert outage.error == pytest.approx(0.2 + 2 * RES)
        assert outage.failed_probes == 1
        assert (outage.first_seq, outage.last_seq) == (3, 3)
        assert not outage.ongoing and outage.start_known
        assert outage.main_reason == "wget:refused"

    def test_run_of_failures_bounds(self):
        records = records_from("PPFFFFPP")
        (outage,) = find_outages(records)
        assert outage.lower == pytest.approx(0.6 - 2 * RES)
        assert outage.upper == pytest.approx(1.0 + 2 * RES)
        assert outage.duration == pytest.approx(0.8)
        assert outage.lower <= outage.duration <= outage.upper

    def test_two_outages(self):
        outages = find_outages(records_from("PFFPPFP"))
        assert [(o.first_seq, o.last_seq) for o in outages] == [(2, 3), (6, 6)]
        result = analyze(MeterLog(tuple(records_from("PFFPPFP"))))
        assert result.downtime == pytest.approx(0.4 + 0.2)
        assert result.max_outage == pytest.approx(0.4)
        assert result.downtime_lower <= result.downtime <= result.downtime_upper

    def test_reasons_counted_most_common_first(self):
        records = [rec(1, 1.0), rec(2, 1.2, False, reason="curl:7"),
                   rec(3, 1.4, False, reason="http:500"), rec(4, 1.6, False, reason="http:500"),
                   rec(5, 1.8)]
        (outage,) = find_outages(records)
        assert outage.reasons == (("http:500", 2), ("curl:7", 1))
        assert outage.to_dict()["reasons"] == {"http:500": 2, "curl:7": 1}

    def test_log_starting_with_failures(self):
        (outage,) = find_outages(records_from("FFFPP"))
        assert not outage.start_known
        assert outage.start == pytest.approx(100.0)  # first failed probe, not earlier
        assert outage.end == pytest.approx(100.5)
        assert outage.lower == pytest.approx(0.4 - 2 * RES)
        assert outage.upper == pytest.approx(0.6 + 2 * RES)
        assert not outage.ongoing

    def test_ongoing_outage_without_until(self):
        records = records_from("PPFFF")
        records[-1] = rec(5, 100.8, False, end=101.8, reason="wget:timeout")
        (outage,) = find_outages(records)
        assert outage.ongoing
        assert outage.end == pytest.approx(101.8)  # the last failed probe's end
        assert outage.duration == pytest.approx(101.8 - 100.3)
        assert outage.duration > 0
        assert outage.lower <= outage.duration <= outage.upper

    def test_ongoing_outage_with_until(self):
        (outage,) = find_outages(records_from("PPFFF"), until=105.0)
        assert outage.ongoing
        assert outage.end == 105.0
        assert outage.duration == pytest.approx(105.0 - 100.3)
        assert outage.upper == pytest.approx(105.0 - 100.2 + 2 * RES)

    def test_until_before_last_probe_end_is_ignored(self):
        records = records_from("PF")
        records[-1] = rec(2, 100.2, False, end=101.2)
        (outage,) = find_outages(records, until=100.5)
        assert outage.end == pytest.approx(101.2)

    def test_ongoing_single_failure_is_never_zero(self):
        # The only failed probe ended in the same clock tick it started.
        records = [rec(1, 100.0), rec(2, 100.2, False, end=100.2)]
        (outage,) = find_outages(records)
        assert outage.ongoing
        assert outage.duration > 0

    def test_stop_event_extends_an_ongoing_outage(self):
        text = (line(1, 100.0) + line(2, 100.2) + line(3, 100.4, False)
                + line(4, 100.6, False) + "#stop 103.00 signal\n")
        result = analyze(parse_log(text))
        (outage,) = result.outages
        assert outage.ongoing
        assert outage.end == pytest.approx(103.0)
        assert result.ongoing
        # An explicit until wins over the stop event.
        assert analyze(parse_log(text), until=104.0).outages[0].end == 104.0

    def test_stop_event_does_not_touch_a_recovered_log(self):
        text = line(1, 100.0) + line(2, 100.2, False) + line(3, 100.4) + "#stop 110.0 signal\n"
        (outage,) = analyze(parse_log(text)).outages
        assert not outage.ongoing
        assert outage.end == pytest.approx(100.3)

    def test_only_last_outage_can_be_ongoing(self):
        outages = find_outages(records_from("FPPFFPFF"), until=200.0)
        assert [o.ongoing for o in outages] == [False, False, True]

    def test_seq_gap_uses_recorded_neighbours(self):
        # seq 3 is missing (probe killed): the edge is between 2 and 4.
        records = [rec(1, 100.0), rec(2, 100.2), rec(4, 100.6, False), rec(5, 100.8)]
        (outage,) = find_outages(records)
        assert outage.upper == pytest.approx(0.6 + 2 * RES)
        assert analysis.achieved_period(records) == pytest.approx(0.2)

    def test_rate_limit_detected(self):
        records = [rec(1, 1.0), rec(2, 1.2, False, reason="http:429"), rec(3, 1.4)]
        result = analyze(MeterLog(tuple(records)))
        assert result.rate_limited
        assert not analyze(MeterLog(tuple(records_from("PFP")))).rate_limited

    def test_to_dict_types(self):
        result = analyze(MeterLog(tuple(records_from("PFFP"))))
        doc = result.to_dict()
        assert isinstance(doc["downtime"], float)
        assert doc["outage_count"] == 1
        assert doc["outages"][0]["ongoing"] is False
        assert set(doc["outages"][0]) >= {"start", "end", "duration", "lower", "upper", "error"}

    def test_healthy_streak_helpers(self):
        records = records_from("PFPPPFPP")
        assert analysis.consecutive_successes_at_end(records) == 2
        assert analysis.first_healthy_streak(records, 3).seq == 5
        assert analysis.first_healthy_streak(records, 3, after=100.9) is None
        assert analysis.first_healthy_streak(records, 2, after=100.9).seq == 8

    @pytest.mark.parametrize("reason,text", [
        ("ok", "ok"),
        ("content", "unexpected content"),
        ("http:429", "rate limiting"),
        ("http:503", "HTTP 503"),
        ("curl:7", "connection failed"),
        ("curl:99", "exit status 99"),
        ("wget:timeout", "wget: timeout"),
        ("weird", "weird"),
    ])
    def test_describe_reason(self, reason, text):
        assert text in analysis.describe_reason(reason)


# -- attribution -------------------------------------------------------------------


def outage(start, end):
    return Outage(start=start, end=end, lower=end - start, upper=end - start, ongoing=False,
                  first_seq=1, last_seq=1, failed_probes=1, reasons=(("http:500", 1),))


class TestAttribute:
    def test_overlap_goes_to_the_window_overlapping_most(self):
        windows = [Window(0, 10, "a"), Window(10, 20, "b")]
        result = attribute([outage(8, 13)], windows)  # 2 s in a, 3 s in b
        assert [len(w.outages) for w in result.windows] == [0, 1]
        assert result.unattributed == ()

    def test_never_counted_twice(self):
        windows = [Window(0, 10), Window(5, 15), Window(9, 30)]
        outages = [outage(1, 2), outage(6, 8), outage(9.5, 10.5), outage(40, 41)]
        result = attribute(outages, windows)
        counted = [o for w in result.windows for o in w.outages] + list(result.unattributed)
        assert sorted(map(id, counted)) == sorted(map(id, outages))
        assert len(result.unattributed) == 1

    def test_slack_widens_windows(self):
        windows = [Window(10, 20)]
        late = outage(20.3, 20.8)
        assert attribute([late], windows).unattributed == (late,)
        result = attribute([late], windows, slack=0.5)
        assert result.windows[0].outages == (late,)
        assert result.unattributed == ()

    def test_unattributed(self):
        result = attribute([outage(1, 2)], [Window(5, 6)])
        assert result.unattributed == (outage(1, 2),)
        assert result.windows[0].outages == ()
        assert result.windows[0].downtime == 0.0
        assert result.windows[0].first_failure_offset is None

    def test_zero_length_outage_inside_a_window(self):
        result = attribute([outage(5, 5)], [Window(0, 10)])
        assert len(result.windows[0].outages) == 1

    def test_window_report(self):
        windows = [Window(100, 120, "migration-1")]
        result = attribute([outage(101, 102), outage(105, 108)], windows)
        report = result.windows[0]
        assert report.downtime == pytest.approx(4.0)
        assert report.max_outage == pytest.approx(3.0)
        assert report.first_failure_offset == pytest.approx(1.0)
        assert report.recovery_offset == pytest.approx(8.0)
        doc = report.to_dict()
        assert doc["label"] == "migration-1" and doc["outage_count"] == 2

    @given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 10)), max_size=15),
           st.lists(st.tuples(st.floats(0, 100), st.floats(0, 20)), max_size=5),
           st.floats(0, 2))
    def test_each_outage_exactly_once(self, spans, wins, slack):
        outages = [outage(s, s + d) for s, d in spans]
        windows = [Window(s, s + d) for s, d in wins]
        result = attribute(outages, windows, slack)
        counted = [o for w in result.windows for o in w.outages] + list(result.unattributed)
        assert sorted(map(id, counted)) == sorted(map(id, outages))
        for o in result.unattributed:
            for w in windows:
                assert o.end < w.start - slack or o.start > w.end + slack


# -- clock --------------------------------------------------------------------------


class TestClock:
    def test_sample_mapping(self):
        sample = clock.ClockSample(controller_before=1000.0, controller_after=1000.2, guest=50.0)
        assert sample.controller == pytest.approx(1000.1)
        assert sample.error == pytest.approx(0.1 + RES)
        assert sample.to_guest(1010.1) == pytest.approx(60.0)

    def test_pause_estimate(self):
        before = clock.ClockSample(1000.0, 1000.1, 50.0)
        # 30 s later on the controller, but the guest clock advanced 29.6 s.
        after = clock.ClockSample(1030.0, 1030.3, 79.6)
        estimate = clock.estimate_pause(before, after)
        assert estimate.controller_elapsed == pytest.approx(30.1)
        assert estimate.guest_elapsed == pytest.approx(29.6)
        assert estimate.pause == pytest.approx(0.5)
        assert estimate.error == pytest.approx(0.05 + 0.15 + 2 * RES)

    def test_no_pause(self):
        before = clock.ClockSample(10.0, 10.0, 3.0)
        after = clock.ClockSample(20.0, 20.0, 13.0)
        estimate = clock.estimate_pause(before, after)
        assert abs(estimate.pause) <= estimate.error

    def test_tightest_is_the_shortest_round_trip(self):
        slow = clock.ClockSample(10.0, 10.4, 3.3)
        tight = clock.ClockSample(11.0, 11.02, 4.01)
        assert clock.tightest([slow, tight, clock.ClockSample(12.0, 12.1, 5.05)]) is tight
        assert tight.round_trip == pytest.approx(0.02)

    def test_same_offset_in_both_round_trips_cancels(self):
        """The guest reads its clock 80% into each round trip (its command starts
        before it reads): each mapping is off by 30 ms, the pause estimate is not."""
        def reading(sent, round_trip, true_pause_so_far):
            read_at = sent + 0.8 * round_trip
            return clock.ClockSample(sent, sent + round_trip, read_at - true_pause_so_far)
        before = reading(100.0, 0.1, 0.0)
        after = reading(130.0, 0.1, 0.7)
        assert before.to_guest(100.08) == pytest.approx(100.08 + 0.03)
        assert clock.estimate_pause(before, after).pause == pytest.approx(0.7)
        # A reading taken differently (early in its round trip) biases it, within the bound.
        early = clock.ClockSample(130.0, 130.1, 130.01 - 0.7)
        biased = clock.estimate_pause(before, early)
        assert biased.pause == pytest.approx(0.7 + 0.07)
        assert abs(biased.pause - 0.7) <= biased.error


# -- property-based: a perfect prober against random true outages -------------------


def _uptime(t: float) -> float:
    """What /proc/uptime shows at true time t (truncated to 10 ms)."""
    return math.floor(t * 100 + 1e-7) / 100


@st.composite
def scenarios(draw):
    period = draw(st.floats(0.05, 1.0))
    jitter = draw(st.floats(0.0, 0.4)) * period  # each probe starts up to this late
    max_gap = period + jitter
    min_gap = period - jitter
    timeout = draw(st.floats(0.05, 3.0))
    t0 = draw(st.floats(10.0, 50000.0))
    # True outages: [a, b) half-open; healthy gaps always hold a probe start.
    first_gap = draw(st.one_of(st.just(-0.5), st.floats(0.0, 3.0)))
    spans = []
    t = t0 + first_gap
    for index in range(draw(st.integers(0, 6))):
        if index:
            t += draw(st.floats(max_gap + 2 * RES, 4.0))
        length = draw(st.floats(0.001, 4.0))
        spans.append((t, t + length))
        t += length
    end = max(t, t0) + draw(st.floats(0.0, 3.0))
    n = int((end - t0) / period) + 1
    assume(n <= 400)
    starts = [t0 + i * period + draw(st.floats(0.0, 1.0)) * jitter for i in range(n)]
    durations = [draw(st.floats(0.0, 1.0)) for _ in range(n)]
    # The log is read at a random moment after the first probe.
    read_at = draw(st.one_of(st.just(float("inf")), st.floats(t0, end + timeout)))
    return dict(period=period, max_gap=max_gap, min_gap=min_gap, timeout=timeout,
                spans=spans, starts=starts, durations=durations, read_at=read_at)


def synthesize(scenario):
    """The log a perfect prober writes, as it stands at ``read_at``.

    A probe observes the service at its start: it fails iff its start lies in
    a true outage.  Good probes are quick; failed ones may take up to the
    timeout.  Lines are written when probes finish (out of order); probes
    still running at ``read_at`` are not in the log.
    """
    spans, read_at = scenario["spans"], scenario["read_at"]
    finished = []
    for seq, (start, fraction) in enumerate(zip(scenario["starts"], scenario["durations"]), 1):
        bad = any(a <= start < b for a, b in spans)
        duration = fraction * (scenario["timeout"] if bad else 0.9 * scenario["min_gap"])
        end = start + duration
        if end <= read_at:
            finished.append((end, seq, start, bad))
    finished.sort()
    text = "#start %.2f v=1\n" % _uptime(scenario["starts"][0])
    truths = {}
    for end, seq, start, bad in finished:
        text += f"{seq} {_uptime(start):.2f} {_uptime(end):.2f} {'F' if bad else 'P'} " \
                f"{'wget:timeout' if bad else 'ok'}\n"
        truths[seq] = start
    return text, truths


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_perfect_prober_outages_are_found_with_honest_bounds(scenario):
    text, starts = synthesize(scenario)
    read_at = scenario["read_at"]
    until = None if math.isinf(read_at) else _uptime(read_at)
    log = parse_log(text)
    assert log.skipped_lines == 0
    assert len(log.records) == len(starts)
    found = analyze(log, until=until).outages
    spans = scenario["spans"]
    records = log.records
    last_recorded = max(starts.values(), default=None)
    horizon = read_at if not math.isinf(read_at) else float("inf")

    def span_of(seq):
        t = starts[seq]
        matches = [i for i, (a, b) in enumerate(spans) if a <= t < b]
        return matches[0] if matches else None

    # 1. Each found outage is made of probes from exactly one true outage.
    owners = []
    for o in found:
        seqs = [r.seq for r in records if o.first_seq <= r.seq <= o.last_seq]
        owner = {span_of(s) for s in seqs}
        assert len(owner) == 1 and None not in owner, (o, owner)
        owners.append(owner.pop())
    assert len(set(owners)) == len(owners)

    # 2. The estimate lies within its bounds; only the last can be ongoing,
    #    and it is ongoing exactly when the log ends inside it.
    for i, o in enumerate(found):
        assert o.lower - 1e-9 <= o.duration <= o.upper + 1e-9
        assert o.error >= 0
        assert o.ongoing == (i == len(found) - 1 and not records[-1].ok)
        if o.ongoing and (until is not None or o.start_known):
            # (Without a read time nor a good probe before it, a log made of one
            # instantly failed probe has nothing to measure an outage by.)
            assert o.duration > 0

    # 3. The bounds are honest: the true duration (up to the read time for an
    #    outage still going on) lies within [lower, upper].  Without a read
    #    time an ongoing outage has no upper bound, and a log starting inside
    #    an outage cannot bound its start.
    for o, owner in zip(found, owners):
        a, b = spans[owner]
        if o.ongoing:
            true = min(b, until if until is not None else o.end) - a
        else:
            true = b - a
        assert true >= o.lower - 1e-9, (true, o)
        if o.start_known and (until is not None or not o.ongoing):
            assert true <= o.upper + 1e-9, (true, o)

    # 4. Every true outage at least one probe period (+ clock resolution)
    #    long, lying wholly between the first probe and the first probe missing
    #    from the log (still running or not started when it was read), is found.
    all_starts = scenario["starts"]
    missing = [t for seq, t in enumerate(all_starts, 1) if seq not in starts]
    if starts:
        covered_until = min(missing + [max(starts.values())])
        for index, (a, b) in enumerate(spans):
            if b - a >= scenario["max_gap"] + RES and a >= all_starts[0] and b <= covered_until:
                assert index in owners, (index, (a, b), found)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.0, 0.999), st.integers(1, 40), st.integers(2, 40))
def test_outage_of_one_period_is_always_seen(period, phase, before, length_periods):
    """Exact-schedule probes (no jitter): an outage of period+resolution is found."""
    t0 = 1000.0
    a = t0 + (before + phase) * period
    b = a + period + RES
    n = before + length_periods + 5
    text = ""
    for i in range(n):
        t = t0 + i * period
        text += f"{i + 1} {_uptime(t):.2f} {_uptime(t + 0.001):.2f} " \
                f"{'F http:500' if a <= t < b else 'P ok'}\n"
    (o,) = analyze(parse_log(text)).outages
    assert o.lower - 1e-9 <= b - a <= o.upper + 1e-9
    assert abs(o.duration - (b - a)) <= o.error + 1e-9


# -- healthy streaks while probes are still in flight ------------------------------


def test_healthy_streak_waits_for_a_probe_still_in_flight():
    """Seq 2 has not written its record yet: it may be a failure, so 3-5 is not yet known
    to be the first healthy run (it would be 2-4 if 2 passes)."""
    records = [rec(1, 100.0, False), rec(3, 100.4), rec(4, 100.6), rec(5, 100.8)]
    assert analysis.first_healthy_streak(records, 3) is None
    with_2 = sorted(records + [rec(2, 100.2)], key=lambda r: r.seq)
    assert analysis.first_healthy_streak(with_2, 3).seq == 4
    with_2_failed = sorted(records + [rec(2, 100.2, False)], key=lambda r: r.seq)
    assert analysis.first_healthy_streak(with_2_failed, 3).seq == 5


def test_healthy_streak_ignores_gaps_before_after():
    # 2 is missing but started before seq 3, which started before ``after``: irrelevant.
    records = [rec(1, 100.0), rec(3, 100.4, False), rec(4, 100.6), rec(5, 100.8),
               rec(6, 101.0)]
    assert analysis.first_healthy_streak(records, 3, after=100.5).seq == 6
    # 4 is missing and may have started after ``after``.
    records = [rec(1, 100.0), rec(2, 100.2, False), rec(3, 100.4), rec(5, 100.8),
               rec(6, 101.0), rec(7, 101.2)]
    assert analysis.first_healthy_streak(records, 3, after=100.3) is None
    # A run completed before the gap is known whatever the missing probe did.
    assert analysis.first_healthy_streak(records[:3] + [rec(4, 100.6)] + records[3:], 3,
                                         after=100.3).seq == 5
    assert analysis.first_healthy_streak(records, 1, after=100.3).seq == 3


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30),
       st.integers(1, 5), st.one_of(st.none(), st.integers(0, 30)))
def test_healthy_streak_never_changes_as_records_arrive(probes, needed, after_index):
    """Probes finish out of order: whatever subset of records was written when the log
    was read, a streak found then is the streak found in the complete log."""
    full = [rec(i + 1, round(100 + 0.2 * i, 2), ok) for i, (ok, _) in enumerate(probes)]
    written = [r for r, (_, done) in zip(full, probes) if done]
    after = float("-inf") if after_index is None else 100 + 0.2 * after_index - 0.1
    found = analysis.first_healthy_streak(written, needed, after=after)
    if found is not None:
        assert found == analysis.first_healthy_streak(full, needed, after=after)


# -- when a streak can be complete at the earliest --------------------------------------


def test_earliest_streak_after_a_failure_is_needed_probe_starts_later():
    records = [rec(1, 100.0), rec(2, 101.0, False)]
    assert analysis.earliest_healthy_streak(records, 5, 1.0) == 106.0


def test_earliest_streak_counts_the_good_probes_at_the_end():
    records = records_from("PFPPP", period=1.0)       # starts 100..104
    assert analysis.earliest_healthy_streak(records, 5, 1.0) == 106.0
    assert analysis.earliest_healthy_streak(records, 3, 1.0) == -math.inf


def test_earliest_streak_counts_probes_in_flight_as_good():
    # seq 3 and 4 have not written their records: they may have passed
    records = [rec(1, 100.0, False), rec(2, 101.0), rec(5, 104.0)]
    assert analysis.earliest_healthy_streak(records, 5, 1.0) == 105.0
    assert analysis.earliest_healthy_streak(records, 4, 1.0) == -math.inf
    # a run complete in a gap, before a later failure: maybe there already
    records = [rec(1, 100.0), rec(3, 102.0), rec(4, 103.0, False)]
    assert analysis.earliest_healthy_streak(records, 3, 1.0) == -math.inf


def test_earliest_streak_starts_after_after():
    records = records_from("PPPPP", period=1.0)       # all before ``after``
    assert analysis.earliest_healthy_streak(records, 3, 1.0, after=104.5) == 107.0
    assert analysis.earliest_healthy_streak([], 3, 1.0, after=104.5) == 106.5
    assert analysis.earliest_healthy_streak([], 3, 1.0) == -math.inf


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0, 2)),
                min_size=1, max_size=30),
       st.integers(1, 6), st.floats(0.05, 2), st.one_of(st.none(), st.floats(-1, 40)))
def test_earliest_streak_is_never_late(probes, needed, interval, after):
    """Probes start at least ``interval`` apart and finish in any order: whatever
    records were written when the log was read, the run the complete log has
    ends with a probe that started no earlier than the bound."""
    starts, t = [], 100.0
    for _, _, extra in probes:
        starts.append(t)
        t += interval + extra
    full = [rec(i + 1, start, ok) for i, (start, (ok, _, _)) in enumerate(zip(starts, probes))]
    written = [r for r, (_, done, _) in zip(full, probes) if done]
    after = float("-inf") if after is None else 100 + after
    found = analysis.first_healthy_streak(full, needed, after=after)
    if found is not None:
        assert analysis.earliest_healthy_streak(written, needed, interval, after) \
            <= found.start + 1e-9


# -- parsing a growing log ---------------------------------------------------------------

LOG_LINES = st.one_of(
    st.builds(lambda seq, t, ok: line(seq, t, ok), st.integers(1, 30),
              st.floats(100, 200).map(lambda t: round(t, 2)), st.booleans()),
    st.sampled_from(["#start 99.90 v=1 tool=wget\n", "#stop 201.00 signal\n", "garbage\n",
                     "\n", "#fatal 1.0 no-http-client x\n", "5 1.00 0.50 P ok\n"]),
)


@given(st.lists(LOG_LINES, max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_log_parser_fed_in_pieces_equals_parse_log(lines, cuts):
    """The controller feeds what each poll brought (whole lines); the result is the same."""
    parser = analysis.LogParser()
    bounds = sorted({0, len(lines), *(c for c in cuts if c <= len(lines))})
    for lo, hi in zip(bounds, bounds[1:]):
        parser.feed("".join(lines[lo:hi]))
    assert parser.log == parse_log("".join(lines))


def test_log_parser_takes_complete_lines_only():
    parser = analysis.LogParser()
    with pytest.raises(ValueError, match="complete lines"):
        parser.feed("1 1.00 1.01 P ok")
    parser.feed("")
    assert parser.log == MeterLog(())
