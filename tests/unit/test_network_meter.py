"""The network meter: probe settings and schedule (pure), its analysis in the report
(known schedules), and the meter process on this host (real sockets, real processes)."""

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rally_metadata_plugin.adapters import network_meter
from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import network_probe as probes
from rally_metadata_plugin.core import report


# -- settings, probes, schedule ----------------------------------------------


def test_icmp_to_a_loopback_address_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="loopback.*network_probe 'tcp'"):
        probes.NetworkProbeSettings(probes.ICMP, "127.0.0.5")
    assert probes.NetworkProbeSettings(probes.TCP, "127.0.0.5").target == \
        "TCP connect to 127.0.0.5:22"


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "none"}, "network_probe must be"),
    ({"interval": 0}, "interval must be a positive"),
    ({"timeout": float("nan")}, "timeout must be a positive"),
    ({"address": "guest.example"}, "must be an IP address"),
    ({"port": 0}, "port must be"),
])
def test_unusable_settings_name_the_problem(kwargs, message):
    args = {"mode": probes.TCP, "address": "10.0.0.5", **kwargs}
    with pytest.raises(ValueError, match=message):
        probes.NetworkProbeSettings(**args)


def test_ping_command_is_bounded_and_picks_the_family():
    v4 = probes.NetworkProbeSettings(probes.ICMP, "10.0.0.5", timeout=0.5)
    assert probes.ping_command(v4) == ["ping", "-n", "-q", "-c", "1", "-W", "1", "10.0.0.5"]
    v6 = probes.NetworkProbeSettings(probes.ICMP, "2001:db8::5", timeout=2.5)
    assert probes.ping_command(v6)[:2] == ["ping", "-6"]
    assert probes.ping_command(v6)[-2:] == ["3", "2001:db8::5"]


def test_failure_reasons():
    assert probes.ping_reason(0) == "ok"
    assert probes.ping_reason(1) == probes.ping_reason(None) == "icmp:timeout"
    assert probes.ping_reason(2) == "icmp:error"
    assert probes.connect_reason(None) == "ok"
    assert probes.connect_reason(ConnectionRefusedError()) == "tcp:refused"
    assert probes.connect_reason(socket.timeout()) == "tcp:timeout"
    assert probes.connect_reason(OSError(errno.EHOSTUNREACH, "x")) == "tcp:unreachable"
    assert probes.connect_reason(OSError(errno.EACCES, "x")) == f"tcp:errno-{errno.EACCES}"
    for reason in ("tcp:refused", "icmp:timeout"):
        assert "refused" in analysis.describe_reason(reason) or \
            "no reply" in analysis.describe_reason(reason)


def test_schedule_is_a_fixed_grid_that_moves_on_when_late():
    schedule = probes.Schedule(10.0, 0.1)
    assert schedule.due(10.0) is None            # probe 1 at 10.0
    assert schedule.due(10.05) == pytest.approx(0.05)
    assert schedule.due(10.1) is None            # probe 2 at 10.1
    assert schedule.due(10.25) is None           # probe 3, 0.05 late: the grid holds
    assert schedule.due(10.25) == pytest.approx(0.05)
    assert schedule.due(10.3) is None            # probe 4 at 10.3
    assert schedule.due(10.9) is None            # 0.5 s late: no burst of missed probes
    assert schedule.due(10.9) == pytest.approx(0.1)


def test_records_round_trip_through_the_parser():
    record = analysis.ProbeRecord(7, 1234.5678, 1234.6, False, "tcp:refused")
    text = analysis.format_event("start", 1234.0, "TCP connect to 10.0.0.5:22") + \
        analysis.format_record(record) + analysis.format_event("stop", 1235.0)
    log = analysis.parse_log(text)
    assert log.records == (analysis.ProbeRecord(7, 1234.568, 1234.6, False, "tcp:refused"),)
    assert log.started and log.stopped_at == 1235.0 and log.skipped_lines == 0
    with pytest.raises(ValueError):
        analysis.format_record(analysis.ProbeRecord(1, 1.0, 1.0, False, "two words"))


def test_no_baseline_explains_blocked_icmp():
    settings = probes.NetworkProbeSettings(probes.ICMP, "172.24.4.10")
    records = [analysis.ProbeRecord(i, i * 0.1, i * 0.1 + 1, False, "icmp:timeout")
               for i in range(1, 31)]
    text = probes.explain_no_baseline(settings, records, 5, 30.0)
    assert "ICMP echo to 172.24.4.10" in text and "0 of 30 probes passed" in text
    assert "security group may not allow ICMP" in text and "network_probe 'tcp'" in text
    assert "gave up: no ping" in probes.explain_no_baseline(settings, [], 5, 1.0, "no ping")


# -- analysis of a network log with known schedules ----------------------------


def network_log(verdicts, start=5000.0, period=0.1, stop=True, reason="tcp:refused"):
    """A network meter log on the controller clock: one probe per character."""
    lines = [analysis.format_event("start", start - 0.05, "TCP connect to 10.0.0.5:22")]
    t = start
    for seq, verdict in enumerate(verdicts, 1):
        ok = verdict == "P"
        lines.append(analysis.format_record(
            analysis.ProbeRecord(seq, t, t + 0.002, ok, "ok" if ok else reason)))
        t += period
    if stop:
        lines.append(analysis.format_event("stop", t))
    return "".join(lines)


def guest_log(verdicts, start=100.0, period=0.2):
    lines = ["#start %.2f v=1 tool=curl\n" % (start - 0.1)]
    for seq, verdict in enumerate(verdicts, 1):
        t = start + (seq - 1) * period
        why = "ok" if verdict == "P" else "curl:7"
        lines.append("%d %.2f %.2f %s %s\n" % (seq, t, t + 0.01, verdict, why))
    lines.append("#stop %.2f\n" % (start + len(verdicts) * period))
    return "".join(lines)


def migration(index, guest_at, controller_at, **kw):
    kw.setdefault("target_host", "host-b")
    kw.setdefault("recovered", True)
    return report.MigrationObservation(index, "host-a", guest_at, finished_at=guest_at + 5,
                                       controller_requested_at=controller_at, **kw)


def test_network_downtime_per_migration_with_bounds_and_offsets():
    # Network: 20 good probes; migration 1 requested at probe 25 (t=5002.45);
    # probes 31-45 fail (1.5 s at 0.1 s); migration 2 at probe 70 (5006.95);
    # probes 75-79 fail (0.5 s).  Metadata (guest clock, 0.2 s period):
    # migration 1 at guest 105.0, probes 30-44 fail; migration 2 at 110.0, none.
    net = network_log("P" * 30 + "F" * 15 + "P" * 29 + "F" * 5 + "P" * 30)
    guest = guest_log("P" * 29 + "F" * 15 + "P" * 60)
    observations = [migration(1, 104.9, 5002.45), migration(2, 110.0, 5006.95)]
    network = report.NetworkMeasurement(net, "TCP connect to 10.0.0.5:22", baseline_at=5000.4)
    result = report.summarize(guest, observations, baseline_at=101.0, network=network)
    figures = result.figures
    first, second = figures.migrations
    assert first.network_downtime == pytest.approx(1.5, abs=0.01)
    assert 1.5 - first.network_downtime_error <= 1.4 + 0.02          # lower bound
    assert first.network_downtime_error == pytest.approx(0.12, abs=0.03)
    assert first.network_max_outage == first.network_downtime
    # Outage edges midway between probes: 5002.95 and 5004.45, from the request at 5002.45.
    assert first.network_lost == pytest.approx(0.5, abs=0.01)
    assert first.network_recovered == pytest.approx(2.0, abs=0.01)
    # Metadata: edges at guest 105.7 and 108.7, from the request at 104.9.
    assert first.first_failure == pytest.approx(0.8, abs=0.01)
    assert first.metadata_lost_after_network == pytest.approx(0.3, abs=0.02)
    assert first.metadata_recovered_after_network == pytest.approx(1.8, abs=0.02)
    assert second.network_downtime == pytest.approx(0.5, abs=0.01)
    assert second.metadata_lost_after_network is None  # no metadata outage to compare
    assert first.network_ongoing is False
    assert figures.network_downtime == pytest.approx(2.0, abs=0.02)
    assert figures.network_max_outage == pytest.approx(1.5, abs=0.01)
    assert figures.network_measured
    assert any("Network (TCP connect" in note and "refused" in note for note in result.notes)


def test_network_outage_still_going_at_the_cutoff_is_ongoing_never_zero():
    net = network_log("P" * 30 + "F" * 20, stop=False)
    guest = guest_log("P" * 60)
    network = report.NetworkMeasurement(net, "ICMP echo to 10.0.0.5", baseline_at=5000.4,
                                        cutoff=5006.0)
    result = report.summarize(guest, [migration(1, 104.0, 5002.5)], baseline_at=101.0,
                              network=network)
    (row,) = result.figures.migrations
    assert row.network_ongoing is True
    # From the edge at 5002.95 up to the cutoff at 5006.0.
    assert row.network_downtime == pytest.approx(3.05, abs=0.02)
    assert any("recovery timeout" in note for note in result.notes if "Network" in note)


def test_outages_before_the_network_baseline_and_of_failed_migrations_do_not_count():
    net = network_log("FFFF" + "P" * 26 + "F" * 10 + "P" * 30)
    guest = guest_log("P" * 60)
    network = report.NetworkMeasurement(net, "TCP connect to 10.0.0.5:22", baseline_at=5000.8)
    failed = migration(1, 104.0, 5002.5, error="No valid host", recovered=False)
    result = report.summarize(guest, [failed], baseline_at=101.0, network=network)
    (row,) = result.figures.migrations
    assert row.failed and row.network_downtime == pytest.approx(1.0, abs=0.01)
    assert result.figures.network_downtime == 0.0
    assert not result.figures.network_measured


def test_no_network_baseline_means_no_network_figures():
    network = report.NetworkMeasurement(network_log("F" * 40), "ICMP echo to 10.0.0.5")
    result = report.summarize(guest_log("P" * 60), [migration(1, 104.0, 5002.5)],
                              baseline_at=101.0, network=network)
    (row,) = result.figures.migrations
    assert row.network_downtime is None and not result.figures.network_measured
    assert any("no healthy baseline" in note for note in result.notes)


def test_network_figures_survive_the_charts_and_extract():
    net = network_log("P" * 30 + "F" * 15 + "P" * 40)
    network = report.NetworkMeasurement(net, "TCP connect to 10.0.0.5:22", baseline_at=5000.4)
    result = report.summarize(guest_log("P" * 60), [migration(1, 104.0, 5002.45)],
                              baseline_at=101.0, network=network)
    additive, complete = report.charts(result)
    output = {"additive": additive, "complete": complete}
    figures = report.extract(output)
    assert figures.network_downtime == result.figures.network_downtime
    assert figures.migrations == result.figures.migrations
    assert figures.network_measured
    off = report.summarize(guest_log("P" * 60), [migration(1, 104.0, 5002.45)],
                           baseline_at=101.0)
    additive, complete = report.charts(off)
    assert [c["title"] for c in additive] == list(report.ADDITIVE_TITLES)
    assert additive[-1]["data"] == []
    extracted = report.extract({"additive": additive, "complete": complete})
    assert extracted.network_downtime is None and not extracted.network_measured


# -- the meter process ---------------------------------------------------------


class Listener:
    """A TCP listener on a loopback address that can refuse connections for a while."""

    def __init__(self, address="127.0.0.77"):
        self.address = address
        self.sock = None
        self.open()

    def open(self):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, 0 if self.sock is None else self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def group_gone(pid):
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_measures_a_refused_window_within_its_bound():
    listener = Listener()
    settings = probes.NetworkProbeSettings(probes.TCP, listener.address, listener.port,
                                           interval=0.05, timeout=1.0, duration=60)
    with network_meter.NetworkMeter(settings) as meter:
        meter.start()
        baseline = meter.wait_for_baseline(5, 10)
        requested = time.monotonic()
        time.sleep(0.3)
        lost = time.monotonic()
        listener.close()
        time.sleep(1.0)
        listener.open()
        back = time.monotonic()
        assert meter.wait_for_recovery(5, back, back + 10)
        text = meter.stop()
    truth = back - lost
    network = report.NetworkMeasurement(text, settings.target, baseline_at=baseline)
    observation = report.MigrationObservation(1, "a", 0.0, target_host="b", recovered=True,
                                              controller_requested_at=requested)
    result = report.summarize("#start 0.00\n1 0.00 0.01 P ok\n", [observation],
                              baseline_at=0.0, network=network)
    (row,) = result.figures.migrations
    assert abs(row.network_downtime - truth) <= row.network_downtime_error + 0.05, (row, truth)
    assert row.network_lost == pytest.approx(lost - requested, abs=row.network_downtime_error
                                             + 0.05)
    assert "tcp:refused" in text


def test_the_meter_process_is_gone_when_the_iteration_fails_halfway():
    listener = Listener()
    settings = probes.NetworkProbeSettings(probes.TCP, listener.address, listener.port,
                                           interval=0.05, timeout=1.0, duration=60)
    meter = network_meter.NetworkMeter(settings)
    with pytest.raises(RuntimeError, match="nova failed"):
        with meter:
            pid = meter.start()
            log_dir = os.path.dirname(meter.log_path)
            raise RuntimeError("nova failed")
    assert meter.process.returncode is not None and group_gone(pid)
    assert not os.path.exists(log_dir)
    assert analysis.parse_log(meter.final_log).stopped_at is not None


def test_pings_in_flight_are_killed_with_the_meter(tmp_path):
    # A fake ping that never answers: the meter's timeout bounds it, the stop kills it.
    fake = tmp_path / "ping"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    settings = probes.NetworkProbeSettings(probes.ICMP, "10.255.0.1", interval=0.05,
                                           timeout=5.0, duration=60)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{tmp_path}:{old_path}"
    try:
        with network_meter.NetworkMeter(settings) as meter:
            pid = meter.start()
            time.sleep(0.5)
            meter.process.send_signal(signal.SIGKILL)  # the meter dies, its pings do not
            meter.process.wait()
            assert not group_gone(pid)
    finally:
        os.environ["PATH"] = old_path
    assert group_gone(pid)


def test_a_meter_whose_controller_died_stops_by_itself(tmp_path):
    pidfile = tmp_path / "meter.pid"
    listener = Listener()
    controller = textwrap.dedent(f"""
        import time
        from rally_metadata_plugin.adapters import network_meter
        from rally_metadata_plugin.core import network_probe as probes
        settings = probes.NetworkProbeSettings("tcp", "{listener.address}", {listener.port},
                                               interval=0.1, timeout=1.0, duration=60)
        meter = network_meter.NetworkMeter(settings)
        open("{pidfile}", "w").write(str(meter.start()))
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", controller])
    try:
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while not group_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group_gone(pid)
    finally:
        parent.kill()


def test_no_ping_on_the_controller_is_a_sentence():
    assert "needs the ping command" in network_meter.unavailable(probes.ICMP,
                                                                 which=lambda name: None)
    assert network_meter.unavailable(probes.TCP, which=lambda name: None) is None


def test_a_guest_that_never_answers_fails_the_baseline_with_a_sentence():
    listener = Listener()
    listener.close()  # nothing listens: refused
    settings = probes.NetworkProbeSettings(probes.TCP, listener.address, listener.port,
                                           interval=0.05, timeout=0.5, duration=60)
    with network_meter.NetworkMeter(settings) as meter:
        meter.start()
        with pytest.raises(network_meter.NetworkBaselineError,
                           match="never answered.*tcp:refused.*nothing listens"):
            meter.wait_for_baseline(3, 1.0)


def group_members(pgid):
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def test_probes_start_on_schedule_while_earlier_ones_hang(tmp_path, monkeypatch):
    fake = tmp_path / "ping"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")  # never answers
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    settings = probes.NetworkProbeSettings(probes.ICMP, "10.255.0.1", interval=0.05,
                                           timeout=0.4, duration=60)
    with network_meter.NetworkMeter(settings) as meter:
        pid = meter.start()
        time.sleep(1.2)
        # about timeout / interval pings in flight at once, started on schedule
        assert len(group_members(pid)) - 1 >= 5
        log = meter.read()
    records = log.records
    assert len(records) >= 10
    assert all(r.reason == "icmp:timeout" and not r.ok for r in records)
    assert all(0.35 <= r.end - r.start <= 0.6 for r in records)
    assert analysis.achieved_period(records) == pytest.approx(0.05, abs=0.01)
    assert group_gone(pid)
