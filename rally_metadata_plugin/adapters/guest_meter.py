"""Control the guest meter over SSH.

:class:`GuestMeter` is a context manager around an ``rally.utils.sshutils.SSH``
connection: it installs and starts the probe script, confirms it runs, reads
the log (each read also samples the guest clock and checks that the meter
still measures), switches fast mode, waits for a healthy baseline or for
recovery, and on exit always stops the meter and closes the connection.
Errors are :class:`GuestError` with sentences a user can act on.

Rally's ``SSH.execute`` polls its channel with a 1 s ``select`` timeout, so
a command costs 1-2 s.  Commands here go through the paramiko client that
``SSH`` holds and block on the channel instead: a round trip costs what the
network costs, which keeps the controller/guest clock mapping tight.

When the floating IP moves with the migration, the SSH connection may die
without a word; :meth:`GuestMeter._run` is the one retry policy for that
(short attempts, reconnect, retry) used by every command that is safe to
repeat.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import socket
import time
from typing import Any, Callable, NamedTuple, Optional

from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import clock_mapping as clocklib
from rally_metadata_plugin.core import probe_script as script

LOG = logging.getLogger(__name__)

_UPTIME = "cat /proc/uptime"

#: Hints for failure reasons seen while waiting for the baseline.
_UNREACHABLE_HINT = (
    "the guest cannot reach the metadata service: check that it runs for this network "
    "(neutron-metadata-agent or the OVN metadata agent on the compute host, or "
    "enable_isolated_metadata on the DHCP agent when the network has no router), and that "
    "the security group allows egress to 169.254.169.254 port 80"
)
_HINTS = collections.OrderedDict([
    ("unreachable", _UNREACHABLE_HINT),
    ("http:404", "the metadata URL does not exist on this cloud: check metadata_url"),
    ("http:429", "neutron's metadata rate limiting rejects the probes: raise probe_interval "
                 "or the rate limit"),
    ("http:5xx", "the metadata service fails (nova metadata API, or the proxy's shared "
                 "secret between neutron and nova)"),
    ("http", "the metadata service answers with an HTTP error"),
    ("content", "the answer does not contain the expected text: by default the server's UUID "
                "in /openstack/latest/meta_data.json; check metadata_url and expect"),
    ("resolve", "the guest cannot resolve the metadata host name: use an IP address URL"),
])


class GuestError(Exception):
    """Something failed inside the guest or on the way to it."""


class BaselineError(GuestError):
    """The metadata service never answered correctly before migrating."""


class SSHLost(GuestError):
    """The SSH connection to the guest failed or went silent; the guest may be fine."""


class MeterLost(GuestError):
    """The meter stopped measuring: it was killed or stopped, its log stopped
    growing, or the guest rebooted.  Downtime after that is unknown, so this
    must never pass for an outage that did not recover."""


#: However fast the meter probes, its log may stay still this long before
#: the controller calls it stuck (a busy guest, a clock jump after a pause).
MIN_STALL_TIMEOUT = 10.0
#: Attempts of a repeatable guest command before giving up on the connection
#: (waiting for recovery retries until its own deadline instead).
RETRY_ATTEMPTS = 3
#: Clock readings per sample; the one with the shortest round trip is kept
#: (a reading delayed by a busy guest or network says the least).
CLOCK_READINGS = 3
#: Default cap of one attempt, in seconds, on top of what the command itself
#: may legitimately wait: a silently dropped connection costs this, not the
#: whole command timeout.
RETRY_TIMEOUT = 5.0
#: The shortest attempt worth making.
MIN_ATTEMPT_TIMEOUT = 1.0
#: Seconds before the first read for the meter's first record; each
#: further read waits twice as long, up to ``poll_interval``.
START_POLL_FIRST = 0.2


class _Reply(NamedTuple):
    """A guest command's outcome, with the controller times of its successful attempt."""

    status: int
    out: str
    err: str
    sent: float
    received: float


class _LogText:
    """The complete lines of the guest log read so far, in the pieces they came in.

    Joining a long log on every poll would cost what re-reading it did; a
    snapshot keeps a view of the pieces up to its read instead, and joins
    them only when asked for its text.
    """

    def __init__(self) -> None:
        self._pieces: list[str] = []

    def append(self, piece: str) -> None:
        self._pieces.append(piece)

    def view(self) -> Callable[[], str]:
        """The text as it is now, built on demand (pieces are only ever appended)."""
        count = len(self._pieces)
        return lambda: "".join(self._pieces[:count])


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The log as read at one moment, with the guest clock at that moment."""

    log: analysis.MeterLog
    clock: clocklib.ClockSample
    _text: Callable[[], str] = dataclasses.field(repr=False, compare=False)

    @property
    def text(self) -> str:
        """The log's complete lines as read (a half-written last line is left out)."""
        return self._text()

    @property
    def guest_time(self) -> float:
        return self.clock.guest


@dataclasses.dataclass(frozen=True)
class Recovery:
    """Outcome of waiting for metadata after a migration."""

    snapshot: Snapshot
    recovered: bool
    #: Guest time from which good probes counted towards recovery.
    since: float


def _reason_class(reason: str) -> str:
    if reason in ("curl:7", "curl:28", "curl:52", "curl:56") or reason.startswith("wget:"):
        return "unreachable"
    if reason == "curl:6":
        return "resolve"
    if reason.startswith("http:5"):
        return "http:5xx"
    if reason in ("http:404", "http:429", "content"):
        return reason
    if reason.startswith("http:"):
        return "http"
    return "unreachable"


def explain_no_baseline(log: analysis.MeterLog, needed: int, waited: float, url: str) -> str:
    """Why a baseline never came, in sentences naming the likely causes."""
    if log.fatal:
        detail = log.fatal
        if detail.startswith("no-http-client"):
            return ("The guest meter cannot probe: neither curl nor wget is installed in the "
                    "image. Use an image with curl or busybox wget (CirrOS has both).")
        if detail.startswith("no-probe-bound"):
            return ("The guest meter cannot bound its probes in time: this busybox wget "
                    "crashes on -T and the timeout applet does not work either. Set the "
                    "scenario's http_tool to curl (CirrOS ships it).")
        return f"The guest meter gave up: {detail}."
    records = log.records
    if not records:
        return (f"The guest meter wrote no probe in {waited:.0f} s: it may have been killed, "
                f"or the guest is too slow; check that /tmp is writable.")
    good = sum(1 for r in records if r.ok)
    reasons = collections.Counter(r.reason for r in records if not r.ok)
    ranked = ", ".join(f"{analysis.describe_reason(r)} ({n}x)" for r, n in reasons.most_common(4))
    classes = []
    for reason, _ in reasons.most_common():
        cls = _reason_class(reason)
        if cls not in classes:
            classes.append(cls)
    hints = "; ".join(_HINTS[c] for c in classes[:3])
    head = (f"Metadata at {url} never answered correctly {needed} times in a row within "
            f"{waited:.0f} s ({good} of {len(records)} probes passed).")
    if not reasons:
        return head + " The probes that ran passed, but too few of them in a row."
    return f"{head} Failures: {ranked}. Likely cause: {hints}."


class GuestMeter:
    """The guest meter on one server, driven over one SSH connection."""

    def __init__(
        self,
        ssh: Any,
        settings: script.ProbeSettings,
        *,
        command_timeout: float = 60.0,
        start_timeout: float = 15.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        fast_exec: bool = True,
        stall_timeout: Optional[float] = None,
        retry_timeout: float = RETRY_TIMEOUT,
    ) -> None:
        self.ssh = ssh
        self.settings = settings
        self.command_timeout = command_timeout
        self.retry_timeout = retry_timeout
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep
        self._fast_exec = fast_exec
        #: Guest seconds without a new log line (over two reads or more) after
        #: which a live meter counts as stuck.
        self.stall_timeout = stall_timeout if stall_timeout is not None else max(
            MIN_STALL_TIMEOUT, 3 * settings.longest_silence)
        self._launched = False
        self.pid: Optional[int] = None
        #: The log as printed by the final stop (None until stopped).
        self.final_log: Optional[str] = None
        self.last_snapshot: Optional[Snapshot] = None
        # What was read of the log so far: its size in bytes, parsed and as text.
        self._offset = 0
        self._parser = analysis.LogParser()
        self._text = _LogText()
        # For the liveness checks: the last guest time seen, when the log last
        # grew (guest time), and reads since then that brought nothing new.
        self._guest_seen: Optional[float] = None
        self._grew_at: Optional[float] = None
        self._quiet_reads = 0

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> "GuestMeter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._launched and self.final_log is None:
                try:
                    # After a failure, one attempt: the failing step had its retries.
                    self.stop(retry=exc_info[0] is None)
                except Exception as e:  # never hide the original failure
                    LOG.warning("Could not stop the guest meter: %s", e)
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.ssh.close()
        except AttributeError:
            pass  # sshutils.SSH.close() on a connection that never opened
        except Exception as e:
            LOG.warning("Could not close the SSH connection: %s", e)

    def start(self) -> int:
        """Install and start the meter; returns its pid once its first record is written."""
        settings = self.settings
        # Neither install nor start is repeated: a repeated start could start
        # a second meter.
        status, _, err, _, _ = self._run(script.install_command(settings),
                                         stdin=script.render_probe_script(settings),
                                         attempts=1, attempt_timeout=self.command_timeout)
        if status == script.EXIT_METER_BUSY:
            raise GuestError(
                f"{err.strip()}: two meters in one directory overwrite each other's log. "
                f"Stop that meter in the guest, or give the scenario another workdir."
            )
        if status != 0:
            raise GuestError(
                f"Could not install the meter script in {settings.workdir} (exit {status}: "
                f"{err.strip() or 'no message'}); the directory must be writable by the SSH user."
            )
        self._launched = True
        status, out, err, _, _ = self._run(script.start_command(settings), attempts=1,
                                           attempt_timeout=self.command_timeout)
        try:
            self.pid = int(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            snapshot = self._try_read()
            if snapshot is not None and snapshot.log.fatal:
                raise GuestError(explain_no_baseline(snapshot.log, 1, 0, settings.url)) from None
            raise GuestError(
                f"The guest meter did not start: no pid in {settings.pid_path} (exit {status}, "
                f"{err.strip() or 'no message'}). The guest needs a POSIX sh and a writable "
                f"{settings.workdir}."
            ) from None
        deadline = self._clock() + self.start_timeout
        pause = START_POLL_FIRST
        while True:
            snapshot = self.read(deadline=deadline)
            if snapshot.log.fatal:
                raise GuestError(explain_no_baseline(snapshot.log, 1, 0, settings.url))
            if snapshot.log.records:
                return self.pid
            if self._clock() >= deadline:
                raise GuestError(
                    f"The guest meter (pid {self.pid}) wrote no probe record within "
                    f"{self.start_timeout:g} s; the guest may be overloaded or the script was "
                    f"killed."
                )
            # A guest that has not written its first record yet is most
            # often a busy one: reading it five times a second (hundreds of
            # guests starting at once) took the CPU its meter needed.
            self._sleep(min(pause, self.poll_interval, max(0.0, deadline - self._clock())))
            pause *= 2

    def stop(self, retry: bool = True) -> str:
        """Stop the meter (its whole process group) and return the complete log.

        ``retry`` False makes one attempt only (cleanup after a failure).
        """
        reply = self._run(script.stop_command(self.settings),
                          attempts=RETRY_ATTEMPTS if retry else 1,
                          attempt_timeout=script.STOP_GRACE_SECONDS + self.retry_timeout)
        self.final_log = reply.out
        self._remove_files()
        return reply.out

    def _remove_files(self) -> None:
        """Remove the meter's files from the guest, once its log is read: one
        attempt, and a failure is only a warning (the guest lost a few
        kilobytes of /tmp, not a measurement)."""
        try:
            self._run(script.cleanup_command(self.settings), attempts=1,
                      attempt_timeout=self.retry_timeout)
        except Exception as e:
            LOG.warning("Could not remove the meter's files from %s: %s",
                        self.settings.workdir, e)

    # -- reading ------------------------------------------------------------

    def read(self, deadline: Optional[float] = None) -> Snapshot:
        """The log so far and a guest clock sample taken in the same command.

        Lost connections are retried (see :meth:`_run`) until ``deadline``
        (controller clock) when given.

        Only what the meter appended since the previous read crosses the
        network and is parsed; a half-written last line is read again next
        time.  (Offsets count the bytes of the decoded text: the meter
        writes ASCII.)  The same command tells whether the meter still
        measures: :class:`MeterLost` says why not (see :meth:`_check_measuring`).
        """
        answer = self._run(script.poll_command(self.settings, self._offset), deadline=deadline)
        reply = script.parse_poll_reply(answer.out)
        clock = self._sample(reply.uptime, answer.sent, answer.received)
        complete = reply.data[:reply.data.rfind("\n") + 1]
        if complete:
            self._parser.feed(complete)
            self._text.append(complete)
            self._offset += len(complete.encode("utf-8"))
        snapshot = Snapshot(self._parser.log, clock, self._text.view())
        self.last_snapshot = snapshot
        self._check_measuring(reply, clock.guest, grew=bool(complete))
        return snapshot

    def _check_measuring(self, reply: script.PollReply, guest_time: float, grew: bool) -> None:
        """Raise :class:`MeterLost` naming why the meter no longer measures.

        A log that simply stops growing would otherwise read as metadata that
        never recovered.  Checked: the guest clock going back (a reboot), the
        meter's process gone (with or without a stop it logged, or with its
        pid file), and a live meter whose log has not grown for
        ``stall_timeout`` guest seconds over at least two reads (one quiet
        read may follow a long switchover pause).  A meter that gave up and
        logged why (``#fatal``) is left to the callers to explain.
        """
        settings = self.settings
        previous, self._guest_seen = self._guest_seen, guest_time
        if previous is not None and guest_time < previous:
            raise MeterLost(
                f"The guest rebooted during the measurement: its uptime went back from "
                f"{previous:.1f} s to {guest_time:.1f} s, and the meter died with it. See the "
                f"server's console log and nova's instance actions for why.")
        log = self._parser.log
        if log.fatal:
            return
        if reply.meter == script.METER_ALIVE:
            if grew:
                self._grew_at, self._quiet_reads = guest_time, 0
                return
            if self._grew_at is None:
                return  # nothing written yet: start() has its own timeout
            self._quiet_reads += 1
            quiet = guest_time - self._grew_at
            if quiet > self.stall_timeout and self._quiet_reads >= 2:
                raise MeterLost(
                    f"The guest meter (pid {reply.pid}) runs but its log {settings.log_path} "
                    f"has not grown for {quiet:.0f} s: most likely the file system holding "
                    f"{settings.workdir} is full (check df in the guest; give the scenario a "
                    f"roomier workdir), or the guest is starved of CPU.")
            return
        stops = [event for event in log.events if event.name == "stop"]
        if stops:
            why = ("its duration bound ran out: the run took far longer than expected"
                   if stops[-1].detail == "duration" else
                   "something in the guest sent it a stop signal (TERM, INT or HUP)")
            raise MeterLost(
                f"The guest meter stopped ({stops[-1].detail}) at guest time "
                f"{stops[-1].time:.1f} s while it was still needed: {why}.")
        last = log.records[-1].end if log.records else None
        after = f" after its last record at guest time {last:.1f} s" if last else ""
        if reply.meter == script.METER_GONE:
            raise MeterLost(
                f"The guest meter (pid {reply.pid}) is gone without logging why: something "
                f"killed it{after} (the OOM killer? see dmesg in the guest). Downtime after "
                f"that was not measured.")
        if reply.meter == script.METER_NO_PID:
            raise MeterLost(
                f"The guest meter's pid file {settings.pid_path} is gone and the meter logged "
                f"no stop: something removed files in {settings.workdir} (a /tmp cleaner?). "
                f"Give the scenario a workdir that nothing cleans up.")
        raise GuestError(
            f"The guest answered the meter poll without the meter's state ({reply.uptime!r} "
            f"then nothing usable); the guest's sh may not be POSIX.")

    def clock_sample(self, readings: int = CLOCK_READINGS) -> clocklib.ClockSample:
        """The guest clock: the tightest of ``readings`` plain clock commands.

        Always the same command, and nothing else in it, so that two samples
        (before and after a migration) carry the same offset within their
        round trips, which cancels in the pause estimate (see
        :mod:`~rally_metadata_plugin.core.clock_mapping`).
        """
        samples = []
        for _ in range(max(1, readings)):
            reply = self._run(_UPTIME)
            samples.append(self._sample(reply.out.partition("\n")[0], reply.sent,
                                        reply.received))
        return clocklib.tightest(samples)

    def set_fast(self, enabled: bool) -> None:
        self._run(script.fast_mode_command(self.settings, enabled))

    # -- waiting ------------------------------------------------------------

    def wait_for_baseline(self, needed: int, timeout: float) -> Snapshot:
        """Wait until ``needed`` probes in a row passed; returns the confirming read."""
        started = self._clock()
        deadline = started + timeout
        while True:
            snapshot = self.read()
            if snapshot.log.fatal:
                break
            if analysis.first_healthy_streak(snapshot.log.records, needed) is not None:
                return snapshot
            if self._clock() >= deadline:
                break
            self._sleep(self._next_read_in(snapshot, needed, deadline))
        raise BaselineError(explain_no_baseline(snapshot.log, needed, self._clock() - started,
                                                self.settings.url))

    def wait_for_recovery(self, needed: int, since_controller: float, timeout: float) -> Recovery:
        """Wait for ``needed`` good probes in a row started after ``since_controller``.

        ``since_controller`` (controller clock, e.g. when nova reported the
        migration done) is mapped to the guest clock with the first read,
        which follows it, so no guest pause lies in between.  SSH hiccups
        right after a migration are retried until the deadline.
        """
        deadline = since_controller + timeout
        since: Optional[float] = None
        snapshot: Optional[Snapshot] = None
        while True:
            try:
                snapshot = self.read(deadline=deadline)
            except SSHLost as e:
                if snapshot is None or since is None:
                    raise SSHLost(
                        f"Lost SSH to the guest after the migration and could not read the "
                        f"meter log for {timeout:g} s: {e}"
                    ) from e
                return Recovery(snapshot, False, since)
            if since is None:
                since = snapshot.clock.to_guest(since_controller)
            if analysis.first_healthy_streak(snapshot.log.records, needed, after=since):
                return Recovery(snapshot, True, since)
            if self._clock() >= deadline:
                return Recovery(snapshot, False, since)
            self._sleep(self._next_read_in(snapshot, needed, deadline, after=since))

    def _next_read_in(self, snapshot: Snapshot, needed: int, deadline: float,
                      after: float = float("-inf")) -> float:
        """Seconds until the next read while waiting for ``needed`` good probes.

        ``poll_interval``, or longer when the log just read shows that the
        run cannot be complete before then (see
        :func:`~rally_metadata_plugin.core.log_analysis.earliest_healthy_streak`):
        a read is an SSH command, which costs the guest, the controller and
        a loaded cloud's SSH path far more than a probe does, and hundreds
        of guests waiting at once would otherwise read every second for
        nothing.  Never past ``deadline``; one probe interval early, as a
        recorded probe start may lag its launch.
        """
        interval = min(self.settings.interval, self.settings.fast_interval)
        earliest = analysis.earliest_healthy_streak(snapshot.log.records, needed,
                                                    interval, after=after)
        now = self._clock()
        ready_in = snapshot.clock.controller + (earliest - snapshot.guest_time) - interval - now
        return max(self.poll_interval, min(ready_in, deadline - now))

    # -- plumbing -----------------------------------------------------------

    @staticmethod
    def _sample(line: str, before: float, after: float) -> clocklib.ClockSample:
        try:
            guest = float(line.split()[0])
        except (ValueError, IndexError):
            raise GuestError(f"Could not read the guest clock from /proc/uptime: {line!r}")
        return clocklib.ClockSample(before, after, guest)

    def _try_read(self) -> Optional[Snapshot]:
        try:
            return self.read()
        except Exception:
            return None

    def _reconnect(self) -> None:
        # A silently dead paramiko transport stays "active": sshutils.SSH only
        # opens a new connection once closed.
        self.close()

    def _run(self, command: str, *, stdin: Optional[str] = None,
             deadline: Optional[float] = None, attempts: Optional[int] = RETRY_ATTEMPTS,
             attempt_timeout: Optional[float] = None) -> _Reply:
        """Run ``command`` in the guest: the one retry policy for every guest command.

        A connection dropped without a word (the floating IP moved) only shows
        as silence, so each attempt is capped at ``attempt_timeout`` (default
        ``retry_timeout``) rather than the whole ``command_timeout``.  When an
        attempt fails the connection is closed, so the next attempt opens a
        new one, and the command is sent again: until ``deadline``
        (controller clock) when given, else up to ``attempts`` times within
        ``command_timeout``.  Only commands that are safe to repeat may have
        more than one attempt.
        """
        started = self._clock()
        limit = deadline if deadline is not None else started + self.command_timeout
        budget = attempts if deadline is None else None
        cap = self.retry_timeout if attempt_timeout is None else attempt_timeout
        tried = 0
        while True:
            tried += 1
            timeout = max(MIN_ATTEMPT_TIMEOUT, min(cap, limit - self._clock()))
            sent = self._clock()
            try:
                status, out, err = self._exec(command, stdin=stdin, timeout=timeout)
                return _Reply(status, out, err, sent, self._clock())
            except SSHLost as e:
                out_of_tries = budget is not None and tried >= budget
                if out_of_tries or self._clock() + self.poll_interval >= limit:
                    if tried == 1:
                        raise
                    raise SSHLost(f"{e} (gave up after {tried} attempts in "
                                  f"{self._clock() - started:.0f} s)") from e
                LOG.warning("SSH to the guest failed (%s); reconnecting and trying again", e)
                self._reconnect()
                self._sleep(self.poll_interval)

    def _exec(self, command: str, stdin: Optional[str] = None,
              timeout: Optional[float] = None) -> tuple[int, str, str]:
        """One attempt; any failure of the connection becomes :class:`SSHLost`."""
        timeout = self.command_timeout if timeout is None else timeout
        try:
            if self._fast_exec and hasattr(self.ssh, "client"):
                # a reconnect's handshake within this attempt's bound too (GuestSSH)
                return _paramiko_exec(self.ssh.client(timeout), command, stdin, timeout)
            if self._fast_exec and hasattr(self.ssh, "_get_client"):
                return _paramiko_exec(self.ssh._get_client(), command, stdin, timeout)
            return self.ssh.execute(command, stdin=stdin, timeout=timeout)
        except SSHLost:
            raise
        except Exception as e:
            raise SSHLost(
                f"SSH command failed on {getattr(self.ssh, 'host', 'the guest')}: "
                f"{type(e).__name__}: {e}"
            ) from e


def _paramiko_exec(client: Any, command: str, stdin: Optional[str],
                   timeout: float) -> tuple[int, str, str]:
    """Run ``command`` on a paramiko ``SSHClient``; block on the channel, no polling."""
    channel = client.get_transport().open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)
        channel.exec_command(command)
        if stdin is not None:
            channel.sendall(stdin.encode())
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        try:
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    break
                out += chunk
            while True:
                chunk = channel.recv_stderr(65536)
                if not chunk:
                    break
                err += chunk
        except socket.timeout:
            raise SSHLost(f"The guest did not finish {command[:60]!r}... within {timeout:g} s")
        if not channel.status_event.wait(timeout):
            raise SSHLost(f"The guest sent no exit status for {command[:60]!r}...")
        status = channel.recv_exit_status()
        return status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    finally:
        channel.close()
