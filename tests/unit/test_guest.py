"""guest.GuestMeter: the real probe script in a local shell, and scripted failures."""

import http.server
import os
import socket
import subprocess
import threading
import time
from unittest import mock

import pytest

from rally_metadata_plugin.adapters import guest_meter as guest
from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import probe_script as script

from guest_commands import command_kind, poll_answer

UUID = "0b7f2a1e-6c4d-4a8e-9d0f-1234567890ab"


class MetadataService:
    """A local HTTP server standing in for the metadata service; ``mode`` changes its answer."""

    def __init__(self):
        service = self
        self.mode = "ok"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if service.mode == "ok":
                    code, body = 200, '{"uuid": "%s", "name": "vm"}' % UUID
                elif service.mode == "other":
                    code, body = 200, '{"uuid": "another-instance"}'
                else:
                    code, body = int(service.mode), "error"
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/openstack/latest/meta_data.json" % self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class LocalShell:
    """Stands in for rally's sshutils.SSH: runs each command in a local ``sh``."""

    host = "local-guest"

    def __init__(self):
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.closed = 0
        self.commands = []

    def execute(self, cmd, stdin=None, timeout=3600):
        self.commands.append(cmd)
        done = subprocess.run(["sh", "-c", cmd], input=stdin, capture_output=True, text=True,
                              timeout=timeout, env=self.env)
        return done.returncode, done.stdout, done.stderr

    def wait(self, timeout=120, interval=1):
        pass

    def close(self):
        self.closed += 1


@pytest.fixture
def service():
    service = MetadataService()
    yield service
    service.close()


def settings_for(service, tmp_path, **kw):
    kw.setdefault("interval", 0.05)
    kw.setdefault("fast_interval", 0.02)
    kw.setdefault("timeout", 1.0)
    kw.setdefault("connect_timeout", 0.5)
    kw.setdefault("tool", "curl")
    return script.ProbeSettings(url=service.url, expect=UUID, workdir=str(tmp_path / "meter"),
                                duration=60, **kw)


def meter_for(shell, settings, **kw):
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("start_timeout", 5)
    return guest.GuestMeter(shell, settings, fast_exec=False, **kw)


def alive(pid):
    """Running, or stopped: anything but gone or a zombie.

    The meter is detached (setsid), so its parent is init; a zombie only
    means init has not reaped it yet, which here can take seconds.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read()
    except FileNotFoundError:
        return False
    return fields[fields.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def test_measures_an_outage_and_recovery_with_the_real_script(service, tmp_path):
    shell = LocalShell()
    settings = settings_for(service, tmp_path)
    with meter_for(shell, settings) as meter:
        pid = meter.start()
        assert alive(pid)
        baseline = meter.wait_for_baseline(5, timeout=10)
        assert analysis.first_healthy_streak(baseline.log.records, 5)
        meter.set_fast(True)
        assert os.path.exists(settings.fast_flag_path)
        sample = meter.clock_sample()
        assert sample.error < 1
        service.mode = "500"
        time.sleep(0.5)
        service.mode = "ok"
        done = time.monotonic()
        recovery = meter.wait_for_recovery(5, done, timeout=10)
        assert recovery.recovered
        assert recovery.since >= sample.guest
        meter.set_fast(False)
        assert not os.path.exists(settings.fast_flag_path)
        text = meter.stop()
    assert shell.closed == 1
    assert not alive(pid)
    log = analysis.parse_log(text)
    assert log.stopped_at is not None
    outages = analysis.analyze(log).outages
    assert len(outages) == 1
    assert outages[0].main_reason == "http:500"
    assert 0.3 < outages[0].duration < 1.0


def test_exit_stops_the_meter_and_closes_ssh_on_failure(service, tmp_path):
    shell = LocalShell()
    meter = meter_for(shell, settings_for(service, tmp_path))
    with pytest.raises(RuntimeError):
        with meter:
            pid = meter.start()
            raise RuntimeError("boom")
    assert not alive(pid)
    assert meter.final_log and "#stop" in meter.final_log
    assert shell.closed == 1


@pytest.mark.parametrize("mode,expected", [
    ("404", "does not exist on this cloud"),
    ("other", "does not contain the expected text"),
    ("500", "metadata service fails"),
    ("429", "rate limiting"),
])
def test_baseline_failure_names_the_likely_cause(service, tmp_path, mode, expected):
    service.mode = mode
    shell = LocalShell()
    with meter_for(shell, settings_for(service, tmp_path)) as meter:
        meter.start()
        with pytest.raises(guest.BaselineError) as error:
            meter.wait_for_baseline(5, timeout=0.5)
    message = str(error.value)
    assert expected in message
    assert service.url in message
    assert "never answered correctly 5 times in a row" in message


def test_baseline_failure_when_nothing_listens(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = script.ProbeSettings(url="http://127.0.0.1:%d/" % port, expect=UUID,
                                    interval=0.05, tool="curl", workdir=str(tmp_path / "m"))
    with meter_for(LocalShell(), settings) as meter:
        meter.start()
        with pytest.raises(guest.BaselineError) as error:
            meter.wait_for_baseline(3, timeout=0.5)
    assert "connection failed" in str(error.value)
    assert "security group" in str(error.value) and "metadata agent" in str(error.value)


def test_explain_missing_http_client_and_silent_meter():
    fatal = analysis.parse_log("#start 1.0 v=1\n#fatal 1.1 no-http-client neither curl nor "
                               "wget is installed\n")
    assert "neither curl nor wget" in guest.explain_no_baseline(fatal, 5, 60, "http://x/")
    assert "wrote no probe" in guest.explain_no_baseline(analysis.parse_log(""), 5, 60, "u")


def test_explain_wget_without_any_time_bound():
    log = analysis.parse_log("#fatal 1.0 no-probe-bound wget crashes on -T and timeout "
                             "does not work\n")
    message = guest.explain_no_baseline(log, 5, 1, "http://x/")
    assert "crashes on -T" in message and "http_tool" in message and "curl" in message


# -- scripted SSH: failures the real shell cannot easily produce --------------


class ScriptedSSH:
    """Answers each command by the first matching rule; records what ran."""

    host = "10.0.0.5"

    def __init__(self, **rules):
        self.rules = {"install": (0, "", ""), "start": (0, "4242\n", ""),
                      "read": (0, "100.00 5.00\n#start 99.9 v=1\n1 99.9 99.91 P ok\n", ""),
                      "stop": (0, "#start 99.9 v=1\n#stop 100.5 signal\n", ""),
                      "uptime": (0, "100.00 5.00\n", ""),
                      "fast-on": (0, "100.00 5.00\n", ""), "fast-off": (0, "", ""),
                      "cleanup": (0, "", "")}
        self.rules.update(rules)
        #: The meter state line of poll answers (see guest_commands.poll_answer).
        self.meter = "alive 4242"
        self.ran = []
        self.timeouts = []
        self.close = mock.Mock()

    def execute(self, cmd, stdin=None, timeout=3600):
        kind = command_kind(cmd)
        self.ran.append(kind)
        self.timeouts.append((kind, timeout))
        rule = self.rules[kind]
        if isinstance(rule, Exception):
            raise rule
        answer = rule() if callable(rule) else rule
        if kind == "read":  # rules give the uptime and the whole log
            status, out, err = answer
            return status, poll_answer(cmd, out, self.meter), err
        return answer


def scripted_meter(ssh, **kw):
    kw.setdefault("start_timeout", 0.2)
    kw.setdefault("poll_interval", 0.01)
    return guest.GuestMeter(ssh, script.ProbeSettings(expect="x"), fast_exec=False, **kw)


def test_install_failure_is_explained_and_nothing_to_stop():
    ssh = ScriptedSSH(install=(1, "", "mkdir: can't create directory: Read-only file system"))
    with pytest.raises(guest.GuestError, match="Read-only file system.*writable"):
        with scripted_meter(ssh) as meter:
            meter.start()
    assert "stop" not in ssh.ran
    ssh.close.assert_called_once()


def test_missing_pid_is_explained_and_meter_still_stopped():
    ssh = ScriptedSSH(start=(0, "", ""), read=(0, "100.0 1.0\n", ""))
    with pytest.raises(guest.GuestError, match="did not start"):
        with scripted_meter(ssh) as meter:
            meter.start()
    assert ssh.ran[-2:] == ["stop", "cleanup"]
    ssh.close.assert_called_once()


def test_fatal_event_at_start_is_reported():
    ssh = ScriptedSSH(read=(0, "100.0 1.0\n#start 99.9 v=1\n#fatal 99.95 no-http-client "
                              "neither curl nor wget is installed\n", ""))
    with pytest.raises(guest.GuestError, match="neither curl nor wget"):
        with scripted_meter(ssh) as meter:
            meter.start()
    assert "stop" in ssh.ran


def test_no_first_record_times_out():
    ssh = ScriptedSSH(read=(0, "100.0 1.0\n#start 99.9 v=1\n", ""))
    with pytest.raises(guest.GuestError, match="wrote no probe record"):
        with scripted_meter(ssh) as meter:
            meter.start()
    assert ssh.ran[-2:] == ["stop", "cleanup"]


def test_waiting_for_the_first_record_reads_less_and_less_often():
    """A guest without its first record yet is most often a busy one: hundreds
    of guests read five times a second took the CPU their meters needed."""
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(round(seconds, 3))
        now[0] += seconds

    ssh = ScriptedSSH(read=(0, "100.0 1.0\n#start 99.9 v=1\n", ""))
    meter = guest.GuestMeter(ssh, script.ProbeSettings(expect="x"), fast_exec=False,
                             start_timeout=10, poll_interval=1.0,
                             clock=lambda: now[0], sleep=sleep)
    with pytest.raises(guest.GuestError, match="wrote no probe record within 10 s"):
        meter.start()
    assert sleeps[:4] == [0.2, 0.4, 0.8, 1.0] and max(sleeps) == 1.0
    assert ssh.ran.count("read") == len(sleeps) + 1 <= 14     # not 50
    assert now[0] == pytest.approx(10.0)                       # never past its deadline


def test_reads_for_the_first_record_retry_until_the_start_deadline():
    """A lost connection while the meter starts is retried until start_timeout,
    not given up after a few attempts."""
    answers = [OSError("timed out")] * 5 + [
        (0, "100.0 1.0\n#start 99.9 v=1\n1 99.9 99.91 P ok\n", "")]

    def read():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ssh = ScriptedSSH(read=read)
    meter = scripted_meter(ssh, start_timeout=30, retry_timeout=1)
    assert meter.start() == 4242
    assert ssh.ran.count("read") == 6 > guest.RETRY_ATTEMPTS


def test_failing_stop_does_not_hide_the_original_error_and_ssh_is_closed():
    ssh = ScriptedSSH(stop=OSError("connection reset"))
    with pytest.raises(ValueError, match="original"):
        with scripted_meter(ssh) as meter:
            meter.start()
            raise ValueError("original")
    ssh.close.assert_called_once()


def test_close_of_a_never_opened_connection_is_harmless():
    ssh = ScriptedSSH()
    ssh.close.side_effect = AttributeError("'bool' object has no attribute 'close'")
    with scripted_meter(ssh):
        pass


def test_recovery_retries_after_ssh_errors_and_reconnects():
    answers = iter([OSError("broken pipe"),
                    (0, "100.0 1.0\n" + "".join("%d %.2f %.2f P ok\n" % (i, 99 + i * 0.1,
                                                                        99.01 + i * 0.1)
                                                for i in range(1, 20)), "")])

    def read():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ssh = ScriptedSSH(read=read)
    meter = scripted_meter(ssh)
    recovery = meter.wait_for_recovery(3, time.monotonic(), timeout=5)
    assert recovery.recovered
    assert ssh.close.call_count == 1  # reconnect


def test_recovery_timeout_returns_the_last_read_unrecovered():
    failing = "100.0 1.0\n" + "".join("%d %.2f %.2f F curl:28\n" % (i, 99 + i * 0.1,
                                                                  99.5 + i * 0.1)
                                      for i in range(1, 5))
    ssh = ScriptedSSH(read=(0, failing, ""))
    recovery = scripted_meter(ssh).wait_for_recovery(3, time.monotonic(), timeout=0.05)
    assert not recovery.recovered
    assert recovery.snapshot.guest_time == 100.0


class ProbingGuest:
    """A guest whose meter starts a probe every second from guest time 0, each
    taking 0.5 s; probes started before ``healthy_from`` fail.  Guest and
    controller clocks are one (``now``); sleeping advances it."""

    def __init__(self, healthy_from: float) -> None:
        self.now = 0.0
        self.healthy_from = healthy_from
        self.read_at: list[float] = []

    def read(self):
        self.read_at.append(self.now)
        lines = "".join(
            f"{i + 1} {i:.2f} {i + 0.5:.2f} {'P ok' if i >= self.healthy_from else 'F wget:timeout'}\n"
            for i in range(int(self.now) + 1) if i + 0.5 <= self.now)
        return 0, f"{self.now:.2f} 1.0\n#start 0.00 v=1\n{lines}", ""

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def meter(self, **kw):
        settings = script.ProbeSettings(expect="x", interval=1.0, fast_interval=1.0)
        return guest.GuestMeter(ScriptedSSH(read=self.read), settings, fast_exec=False,
                                poll_interval=1.0, clock=lambda: self.now,
                                sleep=self.sleep, **kw)


def test_waiting_reads_only_when_the_run_can_be_complete():
    """Hundreds of guests wait at once: a read is an SSH command, so the meter does
    not read while the log shows the run of good probes cannot be complete yet,
    and still sees it as soon as reading every second would."""
    guest_ = ProbingGuest(healthy_from=10)
    snapshot = guest_.meter().wait_for_baseline(5, timeout=60)
    # probes 10-14 pass; 14 ends at 14.5: the next whole second reads it
    assert analysis.first_healthy_streak(snapshot.log.records, 5).start == 14.0
    assert guest_.read_at[-1] == 15.0
    # reading every second would have read 16 times
    assert guest_.read_at == [0.0, 1.0, 4.0, 7.0, 10.0, 13.0, 14.0, 15.0]


def test_waiting_for_recovery_reads_less_and_never_past_its_deadline():
    guest_ = ProbingGuest(healthy_from=30)
    guest_.now = 2.0
    recovery = guest_.meter().wait_for_recovery(5, since_controller=2.0, timeout=9.5)
    assert not recovery.recovered
    # the last read no later than a poll interval past the deadline (2 + 9.5), as
    # when reading every second
    assert guest_.read_at == [2.0, 5.0, 8.0, 11.0, 12.0]
    guest_ = ProbingGuest(healthy_from=6)
    guest_.now = 2.0
    recovery = guest_.meter().wait_for_recovery(5, since_controller=2.0, timeout=30)
    assert recovery.recovered
    assert guest_.read_at == [2.0, 5.0, 8.0, 9.0, 10.0, 11.0]


def test_clock_sample_keeps_the_tightest_of_several_plain_readings():
    now = [1000.0]
    round_trips = iter([0.30, 0.02, 0.10])
    uptimes = iter(["50.00 1.0\n", "51.00 1.0\n", "52.00 1.0\n"])

    def answer():
        now[0] += next(round_trips)
        return 0, next(uptimes), ""

    ssh = ScriptedSSH(uptime=answer)
    sample = scripted_meter(ssh, clock=lambda: now[0]).clock_sample()
    assert guest.CLOCK_READINGS == 3
    assert ssh.ran == ["uptime"] * 3     # the same plain command each time
    assert sample.guest == 51.0
    assert sample.round_trip == pytest.approx(0.02)


def test_unreadable_uptime_is_an_error():
    ssh = ScriptedSSH(uptime=(0, "garbage\n", ""))
    with pytest.raises(guest.GuestError, match="/proc/uptime"):
        scripted_meter(ssh).clock_sample()


# -- the fast exec path over paramiko -----------------------------------------


def test_paramiko_exec_blocks_on_the_channel_and_sends_stdin():
    channel = mock.Mock()
    channel.recv.side_effect = [b"12.5 3.0\n", b"log\n", b""]
    channel.recv_stderr.side_effect = [b""]
    channel.status_event.wait.return_value = True
    channel.recv_exit_status.return_value = 0
    client = mock.Mock()
    client.get_transport.return_value.open_session.return_value = channel
    ssh = mock.Mock(spec=["_get_client", "close", "host"])
    ssh._get_client.return_value = client
    meter = guest.GuestMeter(ssh, script.ProbeSettings(expect="x"))
    status, out, err = meter._exec("cat >x", stdin="payload", timeout=5)
    assert (status, out, err) == (0, "12.5 3.0\nlog\n", "")
    channel.exec_command.assert_called_once_with("cat >x")
    channel.sendall.assert_called_once_with(b"payload")
    channel.shutdown_write.assert_called_once()
    channel.settimeout.assert_called_once_with(5)
    channel.close.assert_called_once()


def test_paramiko_exec_timeout_becomes_guest_error():
    channel = mock.Mock()
    channel.recv.side_effect = socket.timeout()
    client = mock.Mock()
    client.get_transport.return_value.open_session.return_value = channel
    ssh = mock.Mock(spec=["_get_client", "close", "host"])
    ssh._get_client.return_value = client
    with pytest.raises(guest.GuestError, match="within 2 s"):
        guest.GuestMeter(ssh, script.ProbeSettings(expect="x"))._exec("sleep 9", timeout=2)


def test_second_meter_in_the_same_workdir_is_refused(service, tmp_path):
    """Two meters in one workdir would overwrite each other's log and pid file."""
    settings = settings_for(service, tmp_path)
    with meter_for(LocalShell(), settings) as first:
        pid = first.start()
        second = meter_for(LocalShell(), settings)
        with pytest.raises(guest.GuestError) as error:
            with second:
                second.start()
        message = str(error.value)
        assert f"Another guest meter (pid {pid}) is running in {settings.workdir}" in message
        assert "workdir" in message
        # The first meter was left alone: same pid file, its log still growing.
        assert alive(pid)
        with open(settings.pid_path) as pidfile:
            assert pidfile.read().strip() == str(pid)
        grown = len(first.read().log.records)
        time.sleep(0.2)
        assert len(first.read().log.records) > grown
        first.stop()
    # A clean stop takes the meter's files, and its workdir, with it.
    assert not os.path.exists(settings.workdir)
    # A pid file left by a meter that is gone (killed, never stopped) does not
    # block a new one.
    os.makedirs(settings.workdir)
    with open(settings.pid_path, "w") as pidfile:
        pidfile.write(f"{pid}\n")
    with meter_for(LocalShell(), settings) as third:
        assert third.start() != pid


def test_a_stop_leaves_what_the_meter_did_not_write(service, tmp_path):
    """A workdir the user named may hold their own files: only the meter's go."""
    settings = settings_for(service, tmp_path)
    os.makedirs(settings.workdir)
    notes = os.path.join(settings.workdir, "notes.txt")
    with open(notes, "w") as f:
        f.write("mine\n")
    with meter_for(LocalShell(), settings) as meter:
        meter.start()
        time.sleep(0.2)
        log = meter.stop()
    assert "#stop" in log
    assert sorted(os.listdir(settings.workdir)) == ["notes.txt"]


# -- incremental reads ------------------------------------------------------------------


class CountingShell(LocalShell):
    """A LocalShell that counts the bytes each command sends back."""

    def __init__(self):
        super().__init__()
        self.received = []

    def execute(self, cmd, stdin=None, timeout=3600):
        status, out, err = super().execute(cmd, stdin, timeout)
        self.received.append(len(out.encode()) + len(err.encode()))
        return status, out, err


def record_line(seq):
    return "%d %.2f %.2f P ok\n" % (seq, 100 + seq * 0.05, 100.01 + seq * 0.05)


@pytest.fixture
def meter_stand_in(tmp_path):
    """Settings whose pid file names a live process in the workdir, as a running meter."""
    settings = script.ProbeSettings(expect="x", workdir=str(tmp_path / "meter"), duration=60)
    os.makedirs(settings.workdir)
    holder = subprocess.Popen(["sleep", "60"], cwd=settings.workdir)
    with open(settings.pid_path, "w") as pidfile:
        pidfile.write(f"{holder.pid}\n")
    yield settings
    holder.kill()
    holder.wait()


def test_reads_transfer_only_what_is_new(meter_stand_in):
    """Polling a long log costs what was appended since the last poll, not the log's size."""
    settings = meter_stand_in
    with open(settings.log_path, "w") as log:
        log.write("#start 100.00 v=1 tool=curl\n")
        log.writelines(record_line(seq) for seq in range(1, 20001))
    shell = CountingShell()
    meter = meter_for(shell, settings)
    assert len(meter.read().log.records) == 20000
    per_poll = []
    seq = 20000
    for round in range(10):
        with open(settings.log_path, "a") as log:
            for _ in range(5):
                seq += 1
                log.write(record_line(seq))
            if round % 3 == 1:
                log.write(record_line(seq + 1)[:9])  # a record still being written
        shell.received.clear()
        snapshot = meter.read()
        per_poll.append(sum(shell.received))
        assert [r.seq for r in snapshot.log.records[-5:]] == list(range(seq - 4, seq + 1))
        if round % 3 == 1:
            with open(settings.log_path, "a") as log:
                seq += 1
                log.write(record_line(seq)[9:])
    # Uptime, meter state and 5 or 6 records of 27 bytes: never the 540 KB log.
    assert max(per_poll) < 400, per_poll
    with open(settings.log_path) as log:
        text = log.read()
    assert snapshot.text == text
    assert snapshot.log == analysis.parse_log(text)
    assert len(snapshot.log.records) == seq



# -- is the meter still measuring? ---------------------------------------------------------


def reads(*answers):
    """A read rule giving each answer in turn (uptime line + whole log), the last forever."""
    answers = list(answers)

    def rule():
        return (0, answers.pop(0) if len(answers) > 1 else answers[0], "")

    return rule


LOG_SO_FAR = "#start 99.9 v=1\n1 99.9 99.91 P ok\n2 100.1 100.11 P ok\n"


@pytest.mark.parametrize("meter,log,expected", [
    ("gone 4242", LOG_SO_FAR, r"The guest meter \(pid 4242\) is gone without logging why"),
    ("no-pid -", LOG_SO_FAR, r"pid file /tmp/rally-metadata-meter/meter.pid is gone"),
    ("gone 4242", LOG_SO_FAR + "#stop 100.2 duration\n",
     r"stopped \(duration\) at guest time 100.2 s.*duration bound ran out"),
    ("no-pid -", LOG_SO_FAR + "#stop 100.2 signal\n", r"sent it a stop signal"),
])
def test_a_meter_that_stopped_measuring_is_an_error_saying_why(meter, log, expected):
    ssh = ScriptedSSH(read=(0, "100.30 5.00\n" + log, ""))
    ssh.meter = meter
    with pytest.raises(guest.MeterLost, match=expected):
        scripted_meter(ssh).wait_for_recovery(3, time.monotonic(), timeout=5)


def test_a_reboot_is_named():
    ssh = ScriptedSSH(read=reads("500.00 5.00\n" + LOG_SO_FAR, "12.00 3.00\n" + LOG_SO_FAR))
    meter = scripted_meter(ssh)
    meter.read()
    with pytest.raises(guest.MeterLost) as error:
        meter.read()
    message = str(error.value)
    assert "The guest rebooted" in message and "from 500.0 s to 12.0 s" in message
    assert "console log" in message


def test_a_log_that_stopped_growing_is_named():
    grows = ["%.2f 1.00\n%s" % (100 + 2 * i, LOG_SO_FAR + "".join(
        "%d %.2f %.2f P ok\n" % (seq, 100 + seq * 0.1, 100.01 + seq * 0.1)
        for seq in range(3, 3 + i))) for i in range(3)]
    stuck = ["%.2f 1.00\n%s" % (104 + 2 * i, grows[-1].partition("\n")[2]) for i in range(1, 6)]
    ssh = ScriptedSSH(read=reads(*grows, *stuck))
    meter = scripted_meter(ssh, stall_timeout=5)
    for _ in grows:
        meter.read()
    meter.read()  # 2 s quiet
    meter.read()  # 4 s quiet
    with pytest.raises(guest.MeterLost) as error:
        meter.read()  # 6 s quiet
    message = str(error.value)
    assert "The guest meter (pid 4242) runs but its log" in message
    assert "has not grown for 6 s" in message and "full" in message and "workdir" in message


def test_one_quiet_read_after_a_long_pause_is_not_a_stall():
    """After a long switchover pause the guest clock jumps; probes resume a moment later."""
    ssh = ScriptedSSH(read=reads("100.00 1.00\n" + LOG_SO_FAR, "160.00 1.00\n" + LOG_SO_FAR,
                                 "160.50 1.00\n" + LOG_SO_FAR + "3 159.9 160.2 P ok\n"))
    meter = scripted_meter(ssh, stall_timeout=5)
    for _ in range(3):
        meter.read()


def test_default_stall_timeout_leaves_room_for_the_slowest_probe():
    settings = script.ProbeSettings(expect="x", interval=2, fast_interval=1, timeout=7.5,
                                    connect_timeout=0.5)
    meter = guest.GuestMeter(ScriptedSSH(), settings)
    assert meter.stall_timeout >= 3 * (2 + 8)
    assert guest.GuestMeter(ScriptedSSH(), script.ProbeSettings(expect="x")).stall_timeout >= 10


def test_a_fatal_exit_is_explained_not_reported_as_gone():
    ssh = ScriptedSSH(read=(0, "100.0 1.0\n#start 99.9 v=1\n#fatal 99.95 no-http-client "
                               "neither curl nor wget is installed\n", ""))
    ssh.meter = "gone 4242"
    with pytest.raises(guest.GuestError, match="neither curl nor wget"):
        with scripted_meter(ssh) as meter:
            meter.start()



# -- one retry policy for every guest command ------------------------------------------------


def once(error, then):
    """A rule failing with ``error`` the first time, then answering ``then``."""
    answers = [error, then]

    def rule():
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return rule


@pytest.mark.parametrize("kind,call", [
    ("fast-on", lambda meter: meter.set_fast(True)),
    ("uptime", lambda meter: meter.clock_sample(readings=1)),
    ("fast-off", lambda meter: meter.set_fast(False)),
    ("stop", lambda meter: meter.stop()),
    ("read", lambda meter: meter.read()),
])
def test_every_repeatable_command_reconnects_and_retries(kind, call):
    ssh = ScriptedSSH()
    ssh.rules[kind] = once(OSError("connection reset by peer"), ssh.rules[kind])
    call(scripted_meter(ssh))
    # once the log is read, the meter's files go (one attempt, see below)
    assert ssh.ran == [kind, kind] + (["cleanup"] if kind == "stop" else [])
    ssh.close.assert_called_once()  # the reconnect


def test_the_meter_files_go_once_the_log_is_read_and_a_failure_there_is_only_a_warning(
        caplog):
    ssh = ScriptedSSH(cleanup=OSError("connection reset by peer"))
    meter = scripted_meter(ssh)
    assert meter.stop() == "#start 99.9 v=1\n#stop 100.5 signal\n"
    assert ssh.ran == ["stop", "cleanup"]        # not retried
    assert "Could not remove the meter's files from /tmp/rally-metadata-meter" in caplog.text


def test_a_connection_that_stays_down_gives_up_after_a_few_attempts():
    ssh = ScriptedSSH(**{"fast-off": OSError("No route to host")})
    with pytest.raises(guest.SSHLost) as error:
        scripted_meter(ssh).set_fast(False)
    assert ssh.ran == ["fast-off"] * guest.RETRY_ATTEMPTS
    assert f"{guest.RETRY_ATTEMPTS} attempts" in str(error.value)
    assert "No route to host" in str(error.value)


def test_install_and_start_are_not_repeated():
    """A second start could start a second meter; install is followed by start."""
    for kind in ("install", "start"):
        ssh = ScriptedSSH(**{kind: OSError("reset")})
        with pytest.raises(guest.GuestError):
            with scripted_meter(ssh) as meter:
                meter.start()
        assert ssh.ran.count(kind) == 1


def test_each_attempt_is_capped_not_the_whole_command_timeout():
    """A silently dropped connection costs one short attempt, not command_timeout."""
    ssh = ScriptedSSH(read=(0, "100.00 5.00\n#start 99.9 v=1\n1 99.9 99.91 P ok\n"
                              "2 100.5 100.51 P ok\n", ""))
    meter = scripted_meter(ssh, command_timeout=60, retry_timeout=2)
    assert meter.wait_for_recovery(1, time.monotonic(), timeout=30).recovered
    meter.set_fast(True)
    meter.clock_sample()
    meter.set_fast(False)
    meter.stop()
    assert {kind for kind, _ in ssh.timeouts} == {"read", "fast-on", "uptime", "fast-off",
                                                  "stop", "cleanup"}
    for kind, timeout in ssh.timeouts:
        limit = 2 + script.STOP_GRACE_SECONDS if kind == "stop" else 2
        assert timeout <= limit, (kind, timeout)


def test_recovery_wait_retries_until_its_deadline():
    ssh = ScriptedSSH(read=OSError("timed out"))
    meter = scripted_meter(ssh, retry_timeout=1)
    with pytest.raises(guest.SSHLost, match="could not read the meter log for 0.3 s"):
        meter.wait_for_recovery(3, time.monotonic(), timeout=0.3)
    assert ssh.ran.count("read") > guest.RETRY_ATTEMPTS
