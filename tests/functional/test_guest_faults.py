"""The real guest script, under busybox sh and dash, against injected faults.

Each test runs the rendered script in a fake CirrOS guest
(rally_metadata_plugin.testing.guest.Guest),
injects faults into a local metadata server on a schedule, and compares the
analysis of the meter's log with the truth recorded on CLOCK_BOOTTIME (the
clock /proc/uptime shows).

Tolerance.  The analysis bounds every outage by the probe timestamps, which
the script reads from /proc/uptime just *before* it spawns the HTTP client;
the request reaches the server a little later (fork and exec of
wget/timeout/curl, connect: a few ms, tens of ms on a loaded 2-core runner).
Only the variation of that delay between the probes at an outage's two edges
shifts the estimate, so ``TOLERANCE`` = 50 ms is allowed beyond the reported
error bound, plus the uncertainty of the truth itself (for ``drop``: half
the time the iptables command took).
"""

from __future__ import annotations

import time

import pytest

from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core.faults import EXPECTED_REASONS, FaultKind
from rally_metadata_plugin.core.probe_script import METADATA_HOST
from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.testing.guest import SHELLS, wait_group_gone
from rally_metadata_plugin.testing.metadata_server import match_outages, run_schedule

TOLERANCE = 0.05

TOOLS = ["wget", "curl"]

#: (healthy seconds before, kind, outage seconds)
MIXED_SCHEDULE = [
    (0.8, FaultKind.REFUSED, 1.5),
    (0.8, FaultKind.HANG, 1.0),
    (0.8, FaultKind.HTTP_500, 0.5),
    (0.8, FaultKind.WRONG_INSTANCE, 0.7),
]
DROP_SCHEDULE = [
    (0.8, FaultKind.DROP, 0.6),
    (0.8, FaultKind.DROP, 2.0),
]


def describe(truth, result, log_text):
    rows = ["truth:"]
    for t in truth:
        end = f"{t.end.time:.3f}" if t.end else "ongoing"
        rows.append(f"  {t.kind:15s} {t.start.time:.3f} -> {end}  {t.duration:.3f} s")
    rows.append("found:")
    for o in result.outages:
        rows.append(f"  {o.start:.3f} -> {o.end:.3f}  {o.duration:.3f} s +/- {o.error:.3f} "
                    f"[{o.lower:.3f}, {o.upper:.3f}] ongoing={o.ongoing} {dict(o.reasons)}")
    rows.append("log tail:\n" + "\n".join(log_text.splitlines()[-15:]))
    return "\n".join(rows)


def assert_matches_truth(result, truth, tool, log_text):
    """Every injected outage found, within its bound, for the right reason."""
    why = describe(truth, result, log_text)
    assert len(result.outages) == len(truth), why
    matches = match_outages(truth, result.outages)
    assert all(m is not None for m in matches), why
    assert len({id(m) for m in matches}) == len(truth), why
    for true, found in zip(truth, matches):
        slack = TOLERANCE + true.error
        assert abs(found.duration - true.duration) <= found.error + slack, why
        assert found.lower - slack <= true.duration <= found.upper + slack, why
        reasons = {reason for reason, _ in found.reasons}
        assert reasons <= EXPECTED_REASONS[(true.kind, tool)], why
        assert not found.ongoing, why
        assert found.start_known, why


def run_and_compare(guest, server, settings, schedule, tool):
    pid = guest.start(settings)
    guest.wait_for_good_probes(settings, count=3)
    truth = run_schedule(server, schedule)
    # Let the probes of the last outage land and see a healthy tail.
    guest.wait_for_good_probes(settings, count=3)
    time.sleep(max(0.0, truth[-1].end.time + settings.timeout + 0.1 - boottime.now()))
    text = guest.stop(settings)
    assert wait_group_gone(pid, 1.0) == []
    log = analysis.parse_log(text)
    assert log.skipped_lines == 0, text
    assert log.started and log.stopped_at is not None
    result = analysis.analyze(log)
    assert result.period == pytest.approx(settings.interval, abs=0.02)
    assert_matches_truth(result, truth, tool, text)
    return result


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("shell", SHELLS)
def test_refused_hang_500_wrong_instance(make_server, make_guest, expect_text, shell, tool):
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, (tool,))
    settings = guest.settings(url=server.url(), expect=expect_text, tool=tool, interval=0.2)
    run_and_compare(guest, server, settings, MIXED_SCHEDULE, tool)


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("shell", SHELLS)
def test_dropped_packets(netns, make_server, make_guest, expect_text, shell, tool):
    """Packets to 169.254.169.254 dropped by iptables (an un-timed client hangs here)."""
    server = make_server(expect_text + "\n", host=METADATA_HOST, port=80,
                         netns=netns)
    guest = make_guest(shell, (tool,), netns=netns)
    # The default URL: http://169.254.169.254/latest/meta-data/hostname
    settings = guest.settings(expect=expect_text, tool=tool)
    assert settings.url == server.url()
    run_and_compare(guest, server, settings, DROP_SCHEDULE, tool)


ONGOING_CASES = [
    # (shell, tool, kind, how the log is read)
    ("busybox", "wget", FaultKind.HANG, "read"),
    ("dash", "curl", FaultKind.REFUSED, "read"),
    ("busybox", "wget", FaultKind.DROP, "read"),
    ("dash", "wget", FaultKind.REFUSED, "stop"),
    ("busybox", "curl", FaultKind.HTTP_500, "stop"),
    ("busybox-static", "wget", FaultKind.HANG, "stop"),
]


@pytest.mark.parametrize("shell,tool,kind,how", ONGOING_CASES)
def test_outage_in_progress_is_ongoing(request, make_server, make_guest, expect_text,
                                       shell, tool, kind, how):
    """An outage still going on when the log is read counts up to then, never as zero."""
    netns = request.getfixturevalue("netns") if kind == FaultKind.DROP else None
    if netns:
        server = make_server(expect_text + "\n", host=METADATA_HOST, port=80,
                             netns=netns)
    else:
        server = make_server(expect_text + "\n")
    guest = make_guest(shell, (tool,), netns=netns)
    settings = guest.settings(url=server.url(), expect=expect_text, tool=tool)
    pid = guest.start(settings)
    guest.wait_for_good_probes(settings, count=3)
    start = server.set_fault(kind)
    try:
        time.sleep(1.8)
        if how == "read":
            until, text = guest.read_log(settings)
            result = analysis.analyze(analysis.parse_log(text), until=until)
        else:
            text = guest.stop(settings)
            assert wait_group_gone(pid, 1.0) == []
            log = analysis.parse_log(text)
            until = log.stopped_at
            assert until is not None, text
            result = analysis.analyze(log)  # the #stop event bounds the outage
    finally:
        server.clear_fault(kind)
    truth = until - start.time  # the fault was still on at ``until``
    why = f"truth {truth:.3f} s\n" + describe([], result, text)
    assert result.ongoing, why
    assert len(result.outages) == 1, why
    (outage,) = result.outages
    assert outage.ongoing and outage.duration > 0, why
    assert outage.end == pytest.approx(until), why
    # until is a truncated /proc/uptime reading: up to 10 ms more.
    slack = TOLERANCE + start.error + analysis.CLOCK_RESOLUTION
    assert abs(outage.duration - truth) <= outage.error + slack, why
    assert {r for r, _ in outage.reasons} <= EXPECTED_REASONS[(kind, tool)], why
    if how == "read":
        guest.stop(settings)
