"""The network meter: the Rally controller probes the guest's address during an iteration.

:class:`NetworkMeter` (a context manager) runs the probe loop in a process of
its own, ``python -m rally_metadata_plugin.adapters.network_meter``, started
in a new session, so that Rally's threads cannot delay the probe schedule
and so that stopping it is one signal to one process group: the meter and
every ``ping`` it started.  The loop writes one record per probe to a log
file in the guest meter's record format, on ``CLOCK_MONOTONIC`` (the
controller's ``time.monotonic()``, shared by every process of the host);
:class:`NetworkMeter` reads what was appended since its last read, as the
guest meter's reader does, and :mod:`..core.log_analysis` analyses it.

What probes are sent, how they are bounded and how their failures are
named is :mod:`..core.network_probe`'s.  Nothing leaks: leaving the ``with``
block, however it is left, stops the meter, kills its process group and
removes its log directory; a meter whose controller died stops within a
probe interval (it watches its parent), and after ``duration`` in any case.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional

from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import network_probe as probes

LOG = logging.getLogger(__name__)

#: Seconds the meter process may take to write its first line.
START_TIMEOUT = 15.0
#: Seconds between reads of the log while waiting.
POLL_INTERVAL = 0.1
#: Seconds a stopped meter gets, beyond its probe timeout, to finish its
#: probes and write ``#stop`` before its process group is killed.
STOP_GRACE = 2.0


class NetworkMeterError(Exception):
    """The network meter cannot measure; the message says why and what to do."""


class NetworkBaselineError(NetworkMeterError):
    """The guest's address never answered before the first migration."""


def unavailable(mode: str,
                which: Optional[Callable[[str], Optional[str]]] = None) -> Optional[str]:
    """Why the network meter cannot run on this host in ``mode``, or ``None``."""
    which = which or shutil.which
    if mode == probes.ICMP and which(probes.PING) is None:
        return ("network_probe 'icmp' needs the ping command on the Rally host, and there is "
                "none in PATH: install it (iputils-ping, or busybox), or set network_probe to "
                "'tcp' (a connect to the guest's SSH port) or 'none'")
    return None


class NetworkMeter:
    """The network meter of one iteration: start, read, wait, stop (always, on exit)."""

    def __init__(self, settings: probes.NetworkProbeSettings, *,
                 python: str = sys.executable,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 poll_interval: float = POLL_INTERVAL,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.settings = settings
        self._python = python
        self._clock = clock
        self._sleep = sleep
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self.process: Optional[subprocess.Popen] = None
        self._dir: Optional[str] = None
        self._offset = 0
        self._partial = b""
        self._parser = analysis.LogParser()
        self._text: list[str] = []
        #: The complete log once stopped (None until then).
        self.final_log: Optional[str] = None

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> "NetworkMeter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.stop()
        except Exception as e:  # never hide the original failure
            LOG.warning("Could not stop the network meter cleanly: %s", e)

    @property
    def log_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "network.log")

    def start(self) -> int:
        """Start the meter process; returns its pid once it wrote its ``#start`` line."""
        problem = unavailable(self.settings.mode)
        if problem:
            raise NetworkMeterError(problem[0].upper() + problem[1:] + ".")
        self._dir = tempfile.mkdtemp(prefix="rally-network-meter-")
        stderr = open(os.path.join(self._dir, "stderr"), "wb")
        try:
            self.process = subprocess.Popen(
                [self._python, "-m", __name__, _settings_json(self.settings), self.log_path],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True, close_fds=True)
        finally:
            stderr.close()
        deadline = self._clock() + self.start_timeout
        while not self.read().started:
            if self.process.poll() is not None or self._clock() >= deadline:
                raise NetworkMeterError(
                    f"The network meter process did not start ({self._why_not_running()}).")
            self._sleep(0.02)
        return self.process.pid

    def stop(self) -> str:
        """Stop the meter, kill its process group, return the complete log.  Idempotent."""
        if self.final_log is not None:
            return self.final_log
        try:
            if self.process is not None:
                self._end_process()
                self.read()
            self.final_log = self.text
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
        return self.final_log

    def _end_process(self) -> None:
        process = self.process
        group = process.pid  # the leader of its own session and process group
        if process.poll() is None:
            # The meter only: its pings in flight end within their bound and are recorded
            # as what they saw, not as failures caused by the stop.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.settings.timeout + STOP_GRACE)
            except subprocess.TimeoutExpired:
                LOG.warning("The network meter did not stop within %.0f s; killing it",
                            self.settings.timeout + STOP_GRACE)
        _signal_group(group, signal.SIGKILL)  # and any ping it left behind
        process.wait()
        deadline = time.monotonic() + 5
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _group_alive(group):
            raise NetworkMeterError(f"processes of the network meter's group {group} "
                                    f"survived SIGKILL")

    def _why_not_running(self) -> str:
        status = self.process.poll() if self.process else None
        err = ""
        if self._dir is not None:
            try:
                with open(os.path.join(self._dir, "stderr"), "rb") as f:
                    err = f.read().decode("utf-8", "replace").strip().splitlines()[-1:]
                    err = err[0] if err else ""
            except OSError:
                pass
        if status is None:
            return f"no first line within {self.start_timeout:g} s"
        return f"exit status {status}" + (f": {err}" if err else "")

    # -- reading ------------------------------------------------------------

    def read(self) -> analysis.MeterLog:
        """The log so far (only what was appended since the last read is parsed)."""
        if self._dir is not None:
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            self._offset += len(data)
            data = self._partial + data
            complete, newline, self._partial = data.rpartition(b"\n")
            if newline:
                text = (complete + newline).decode("utf-8", "replace")
                self._parser.feed(text)
                self._text.append(text)
        return self._parser.log

    @property
    def text(self) -> str:
        """The complete lines read so far."""
        return "".join(self._text)

    def _fatal(self, log: analysis.MeterLog) -> Optional[str]:
        if log.fatal:
            return log.fatal
        if self.process is not None and self.process.poll() is not None \
                and self.final_log is None:
            return f"its process ended ({self._why_not_running()})"
        return None

    def wait_for_baseline(self, needed: int, timeout: float) -> float:
        """Wait for ``needed`` good probes in a row; returns the start of the probe that
        completed them (controller clock).  Raises :class:`NetworkBaselineError` saying
        why not."""
        started = self._clock()
        while True:
            log = self.read()
            streak = analysis.first_healthy_streak(log.records, needed)
            if streak is not None:
                return streak.start
            fatal = self._fatal(log)
            if fatal or self._clock() - started >= timeout:
                raise NetworkBaselineError(probes.explain_no_baseline(
                    self.settings, log.records, needed, self._clock() - started, fatal))
            self._sleep(self.poll_interval)

    def wait_for_recovery(self, needed: int, since: float, deadline: float) -> bool:
        """Wait until ``needed`` good probes in a row started after ``since``; False when
        ``deadline`` (both controller clock) came first."""
        while True:
            log = self.read()
            if analysis.first_healthy_streak(log.records, needed, after=since) is not None:
                return True
            fatal = self._fatal(log)
            if fatal:
                raise NetworkMeterError(f"The network meter ({self.settings.target}) stopped "
                                        f"measuring: {fatal}.")
            if self._clock() >= deadline:
                return False
            self._sleep(self.poll_interval)


def _settings_json(settings: probes.NetworkProbeSettings) -> str:
    # read back by main() as NetworkProbeSettings(**fields)
    return json.dumps(dataclasses.asdict(settings))


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- The meter process --------------------------------------------------------


def _probe(settings: probes.NetworkProbeSettings, seq: int,
           write: Callable[[str], None]) -> None:
    start = time.monotonic()
    if settings.mode == probes.TCP:
        error: Optional[BaseException] = None
        try:
            socket.create_connection((settings.address, settings.port),
                                     timeout=settings.timeout).close()
        except OSError as e:
            error = e
        reason = probes.connect_reason(error)
    else:
        ping = subprocess.Popen(probes.ping_command(settings), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            status: Optional[int] = ping.wait(timeout=settings.timeout)
        except subprocess.TimeoutExpired:
            ping.kill()
            ping.wait()
            status = None
        reason = probes.ping_reason(status)
    end = time.monotonic()
    write(analysis.format_record(analysis.ProbeRecord(seq, start, end, reason == "ok", reason)))


def run(settings: probes.NetworkProbeSettings, log_path: str,
        stop: threading.Event) -> int:
    """Probe on schedule until ``stop`` is set, the parent dies or ``duration`` passes."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(line: str) -> None:
        os.write(fd, line.encode())  # one write per line: lines never interleave

    parent = os.getppid()
    begin = time.monotonic()
    write(analysis.format_event("start", begin, settings.target))
    problem = unavailable(settings.mode)
    if problem:
        write(analysis.format_event("fatal", time.monotonic(), problem))
        return 3
    end_by = begin + settings.duration if settings.duration else float("inf")
    schedule = probes.Schedule(begin, settings.interval)
    threads: list[threading.Thread] = []
    seq = 0
    while not stop.is_set() and os.getppid() == parent and time.monotonic() < end_by:
        wait = schedule.due(time.monotonic())
        if wait is not None:
            stop.wait(min(wait, 0.5))
            continue
        seq += 1
        thread = threading.Thread(target=_probe, args=(settings, seq, write), daemon=True)
        thread.start()
        threads = [t for t in threads if t.is_alive()] + [thread]
    # Probes in flight are bounded: let them write their records.
    finish_by = time.monotonic() + settings.timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, finish_by - time.monotonic()))
    write(analysis.format_event("stop", time.monotonic()))
    os.close(fd)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = probes.NetworkProbeSettings(**json.loads(args[0]))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    return run(settings, args[1], stop)


if __name__ == "__main__":
    sys.exit(main())
