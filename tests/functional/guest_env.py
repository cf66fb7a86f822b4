"""Run the real guest meter in a fake CirrOS environment, against a fake metadata service.

CirrOS has busybox ash and busybox applets (``wget``, ``sleep``, ``timeout``,
``setsid`` ...) plus curl, and neither bash nor python.  :class:`Guest`
emulates that with a private ``bin`` directory of symlinks to busybox that is
the *only* entry of ``PATH``; ``sh`` points at busybox or at dash, and
``curl``/``wget`` are present only when asked for.

:class:`MetadataServer` is a small threaded HTTP server that answers the
expected text and can inject faults of these kinds:

``refused``         the listening socket is closed (connects are refused), then reopened;
``hang``            connections are accepted but requests are never answered;
``http_500``        HTTP 500;
``wrong_instance``  HTTP 200 carrying another instance's data;
``drop``            packets to the service are dropped with iptables (needs a
                    :class:`NetNS`, i.e. root, ``ip`` and ``iptables``).

Every fault edge is timestamped on ``CLOCK_BOOTTIME``, the clock
``/proc/uptime`` shows, so the truth is directly comparable with the meter's
timestamps.  Nothing here needs pytest; :func:`require` uses it lazily.  The
module is shared by the functional tests and ``tools/bench_meter.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Iterable, Optional, Sequence

from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import probe_script as script

BUSYBOX = shutil.which("busybox")
DASH = shutil.which("dash")
CURL = shutil.which("curl")
IP = shutil.which("ip")
IPTABLES = shutil.which("iptables")

METADATA_HOST = script.METADATA_HOST
HOSTNAME_PATH = "/latest/meta-data/hostname"

#: Applets a CirrOS guest has (all busybox); ``sh`` is added separately.
APPLETS = (
    "ash", "sleep", "timeout", "setsid", "nohup", "cat", "rm", "mkdir", "kill", "hostname",
    "grep", "cut", "awk", "echo", "printf", "ls", "head", "tail", "tr", "sed", "true", "false",
    "test", "[", "env", "ps", "uptime", "touch", "mv", "cp", "wc", "expr",
)

FAULT_KINDS = ("refused", "hang", "http_500", "wrong_instance", "drop")

#: Reasons the meter may log for each fault kind, per HTTP tool.
EXPECTED_REASONS = {
    ("refused", "wget"): {"wget:refused"},
    ("refused", "curl"): {"curl:7"},
    ("hang", "wget"): {"wget:timeout"},
    ("hang", "curl"): {"curl:28"},
    ("drop", "wget"): {"wget:timeout"},
    ("drop", "curl"): {"curl:28"},
    ("http_500", "wget"): {"http:500"},
    ("http_500", "curl"): {"http:500"},
    ("wrong_instance", "wget"): {"content"},
    ("wrong_instance", "curl"): {"content"},
}


def boottime() -> float:
    """The clock ``/proc/uptime`` shows (it truncates to 10 ms)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def is_root() -> bool:
    return os.geteuid() == 0


def require(condition: bool, why: str) -> None:
    """Skip the calling test saying ``why``, or fail when ``RMP_REQUIRE_ALL=1``.

    CI sets ``RMP_REQUIRE_ALL=1``: there a missing prerequisite is a broken
    CI image, not a reason to silently test less.
    """
    if condition:
        return
    import pytest

    if os.environ.get("RMP_REQUIRE_ALL") == "1":
        pytest.fail(f"RMP_REQUIRE_ALL=1 but cannot run: {why}", pytrace=False)
    pytest.skip(why)


def require_shell(shell: str) -> None:
    require(BUSYBOX is not None, "busybox is not installed (needed for the CirrOS applets)")
    if shell == "dash":
        require(DASH is not None, "dash is not installed")


def require_netns() -> None:
    """Network namespaces and iptables (for the ``drop`` fault and 169.254.169.254)."""
    require(is_root(), f"not root (euid {os.geteuid()}): network namespaces and iptables "
                       "need root")
    require(IP is not None, "iproute2 'ip' is not installed")
    require(IPTABLES is not None, "iptables is not installed")


# -- Network namespace --------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


class NetNS:
    """A throw-away network namespace with lo up and 169.254.169.254 on lo."""

    def __init__(self, prefix: str = "rmp") -> None:
        self.name = f"{prefix}-{os.getpid()}-{random.randrange(16**6):06x}"
        self._created = False

    def __enter__(self) -> "NetNS":
        self.create()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self) -> None:
        subprocess.run([IP, "netns", "add", self.name], check=True, capture_output=True)
        self._created = True
        try:
            self.run([IP, "link", "set", "lo", "up"])
            self.run([IP, "addr", "add", f"{METADATA_HOST}/32", "dev", "lo"])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Delete the namespace (its iptables rules go with it)."""
        if self._created:
            subprocess.run([IP, "netns", "delete", self.name], capture_output=True)
            self._created = False

    @property
    def prefix(self) -> list[str]:
        return [IP, "netns", "exec", self.name]

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("check", True)
        kwargs.setdefault("capture_output", True)
        return subprocess.run([*self.prefix, *argv], **kwargs)

    def iptables(self, *args: str) -> None:
        self.run([IPTABLES, "-w", *args])

    def call_inside(self, function):
        """Run ``function()`` in a thread that joined the namespace; sockets stay there."""
        result: dict = {}

        def run() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        errno = ctypes.get_errno()
                        raise OSError(errno, f"setns {self.name}: {os.strerror(errno)}")
                finally:
                    os.close(fd)
                result["value"] = function()
            except BaseException as error:  # handed to the caller
                result["error"] = error

        thread = threading.Thread(target=run, name=f"setns-{self.name}")
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]
        return result["value"]


# -- Fake metadata service ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Edge:
    """A fault edge on CLOCK_BOOTTIME; it took effect within ``time +/- error``."""

    time: float
    error: float


def _pick_port() -> int:
    # Outside the usual ephemeral range (32768-60999) so that no client socket
    # can take the port while the listener is closed for a 'refused' outage.
    return random.randrange(20000, 32000)


class MetadataServer:
    """A threaded HTTP server with injectable faults; see the module docstring."""

    def __init__(self, body: str, host: str = "127.0.0.1", port: Optional[int] = None,
                 netns: Optional[NetNS] = None, other_body: str = "other-instance-0000\n"):
        self.body = body
        self.other_body = other_body
        self.host = host
        self.netns = netns
        self.port = port
        self.mode = "ok"
        self.requests = 0
        #: Called with no argument when a complete request arrives (tests hook it).
        self.on_request = None
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._conns: set[socket.socket] = set()
        self._closed = False

    # lifecycle
    def __enter__(self) -> "MetadataServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_listener(self) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            return sock

        return self.netns.call_inside(make) if self.netns else make()

    def start(self) -> None:
        if self.port is not None:
            self._open()
            return
        for _ in range(50):
            self.port = _pick_port()
            try:
                self._open()
                return
            except OSError:
                continue
        raise RuntimeError("no free port")

    def _open(self) -> None:
        listener = self._new_listener()
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); new SYNs get RST
            listener.close()

    def close(self) -> None:
        self._closed = True
        self._close_listener()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def url(self, path: str = HOSTNAME_PATH) -> str:
        host = METADATA_HOST if self.host == METADATA_HOST and self.port == 80 else \
            f"{self.host}:{self.port}"
        return f"http://{host}{path}"

    # serving
    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            mode = self.mode  # the state when the request arrived decides
            with self._lock:
                self.requests += 1
            if self.on_request is not None:
                self.on_request()
            if mode == "hang":
                conn.settimeout(None)
                while conn.recv(4096):  # until the client gives up (or close())
                    pass
                return
            if mode == "http_500":
                status, body = "500 Internal Server Error", "internal error\n"
            elif mode == "wrong_instance":
                status, body = "200 OK", self.other_body
            else:
                status, body = "200 OK", self.body
            payload = body.encode()
            conn.sendall(
                f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
            )
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    # faults
    def set_fault(self, kind: str) -> Edge:
        """Start a fault; returns when (on CLOCK_BOOTTIME) it took effect."""
        if kind not in FAULT_KINDS:
            raise ValueError(kind)
        before = boottime()
        if kind == "refused":
            self._close_listener()
        elif kind == "drop":
            if self.netns is None:
                raise RuntimeError("the drop fault needs a network namespace")
            self.netns.iptables("-I", "INPUT", "-p", "tcp", "--dport", str(self.port),
                                "-j", "DROP")
        else:
            self.mode = kind
        after = boottime()
        return Edge((before + after) / 2, (after - before) / 2)

    def clear_fault(self, kind: str) -> Edge:
        """End a fault started with :meth:`set_fault`."""
        before = boottime()
        if kind == "refused":
            self._open()
        elif kind == "drop":
            self.netns.iptables("-D", "INPUT", "-p", "tcp", "--dport", str(self.port),
                                "-j", "DROP")
        else:
            self.mode = "ok"
        after = boottime()
        return Edge((before + after) / 2, (after - before) / 2)


@dataclasses.dataclass(frozen=True)
class TrueOutage:
    kind: str
    start: Edge
    end: Optional[Edge]  # None: still going on

    @property
    def duration(self) -> float:
        end = self.end.time if self.end else boottime()
        return end - self.start.time

    @property
    def error(self) -> float:
        return self.start.error + (self.end.error if self.end else 0.0)


def inject(server: MetadataServer, kind: str, duration: float) -> TrueOutage:
    """One fault of ``duration`` seconds (sleeping through it)."""
    start = server.set_fault(kind)
    time.sleep(max(0.0, start.time + duration - boottime()))
    end = server.clear_fault(kind)
    return TrueOutage(kind, start, end)


def run_schedule(server: MetadataServer, schedule: Iterable[tuple[float, str, float]]
                 ) -> list[TrueOutage]:
    """``schedule``: (healthy seconds before, kind, outage seconds) triples."""
    truth = []
    for gap, kind, duration in schedule:
        time.sleep(gap)
        truth.append(inject(server, kind, duration))
    return truth


# -- The fake guest -------------------------------------------------------------


def make_guest_bin(directory: pathlib.Path, shell: str = "busybox",
                   tools: Sequence[str] = ("wget",)) -> pathlib.Path:
    """A bin directory for a CirrOS-like guest: busybox applets, ``sh``, HTTP tools.

    ``shell`` is ``busybox`` (ash) or ``dash``; ``tools`` any of ``wget``
    (busybox) and ``curl`` (the real one; CirrOS ships curl).
    """
    if BUSYBOX is None:
        raise RuntimeError("busybox is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    for applet in APPLETS:
        (directory / applet).symlink_to(BUSYBOX)
    if shell == "busybox":
        (directory / "sh").symlink_to(BUSYBOX)
    elif shell == "dash":
        if DASH is None:
            raise RuntimeError("dash is not installed")
        (directory / "sh").symlink_to(DASH)
    else:
        raise ValueError(f"unknown shell {shell!r}")
    for tool in tools:
        if tool == "wget":
            (directory / "wget").symlink_to(BUSYBOX)
        elif tool == "curl":
            if CURL is None:
                raise RuntimeError("curl is not installed")
            (directory / "curl").symlink_to(CURL)
        else:
            raise ValueError(f"unknown HTTP tool {tool!r}")
    return directory


def _proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """(state, pgid) of a live process, None when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            text = stream.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def wait_group_gone(pgid: int, timeout: float = 3.0) -> list[int]:
    """Wait until the group has no live member; returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = group_members(pgid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


class _Reaper:
    """Plays the guest's init for the meters we start.

    ``start_command`` detaches the meter, so its parent exits and the meter
    (and any probe it leaves behind) is re-parented.  Here pid 1 reaps
    lazily, and ``stop_command`` waits while ``kill -0`` still sees the
    zombie.  While a :class:`Guest` is open this process is a child
    subreaper and a thread reaps, by process group, only the meters' processes
    (never a child that ``subprocess`` waits for).  Reaping them here also
    puts their CPU time into ``RUSAGE_CHILDREN``.
    """

    PR_SET_CHILD_SUBREAPER = 36

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[int, int] = {}
        self._users = 0
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                _libc.prctl(self.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
                self._wake.clear()
                self._thread = threading.Thread(target=self._loop, name="guest-reaper",
                                                daemon=True)
                self._thread.start()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self._wake.set()
            if self._thread:
                self._thread.join()
            self.reap()
            _libc.prctl(self.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

    def watch(self, pgid: int) -> None:
        with self._lock:
            self._groups[pgid] = self._groups.get(pgid, 0) + 1

    def reap(self) -> None:
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
            while True:
                try:
                    pid, _ = os.waitpid(-pgid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break

    def _loop(self) -> None:
        while not self._wake.wait(0.02):
            self.reap()


REAPER = _Reaper()


class Guest:
    """A fake CirrOS guest: a workdir, a PATH of busybox applets, maybe a netns.

    Use it as a context manager (or call :meth:`close`): that kills whatever
    the guest still runs.
    """

    def __init__(self, root: pathlib.Path, shell: str = "busybox",
                 tools: Sequence[str] = ("wget",), netns: Optional[NetNS] = None):
        self.root = pathlib.Path(root)
        self.shell = shell
        self.tools = tuple(tools)
        self.netns = netns
        self.bin = make_guest_bin(self.root / "bin", shell, tools)
        self.workdir = self.root / "meter"
        self.env = {"PATH": str(self.bin), "HOME": str(self.root), "LC_ALL": "C"}
        self.pids: list[int] = []
        REAPER.acquire()
        self._open = True

    def __enter__(self) -> "Guest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            self.kill_all()
            REAPER.release()

    def settings(self, **overrides) -> script.ProbeSettings:
        overrides.setdefault("workdir", str(self.workdir))
        return script.ProbeSettings(**overrides)

    def sh(self, command: str, input: Optional[str] = None, timeout: float = 30,
           check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` with the guest's sh, as an SSH session would."""
        argv = [str(self.bin / "sh"), "-c", command]
        if self.netns:
            argv = self.netns.prefix + argv
        result = subprocess.run(argv, input=input, capture_output=True, text=True,
                                env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{command!r} exited {result.returncode}: {result.stderr}")
        return result

    def install(self, settings: script.ProbeSettings) -> None:
        self.sh(script.install_command(settings), input=script.render_probe_script(settings))

    def start(self, settings: script.ProbeSettings) -> int:
        """Install and start the meter detached; returns its pid (= its process group)."""
        self.install(settings)
        out = self.sh(script.start_command(settings)).stdout.strip()
        pid = int(out)
        self.pids.append(pid)
        REAPER.watch(pid)
        return pid

    def run_foreground(self, settings: script.ProbeSettings,
                       timeout: float = 30) -> subprocess.CompletedProcess:
        """Install and run the script in the foreground (``sh meter.sh``)."""
        self.install(settings)
        return self.sh(f"sh {settings.script_path}", timeout=timeout, check=False)

    def read_log(self, settings: script.ProbeSettings) -> tuple[float, str]:
        """(guest uptime when read, log text) while the meter keeps running."""
        out = self.sh(script.read_log_command(settings)).stdout
        first, _, rest = out.partition("\n")
        return float(first.split()[0]), rest

    def log_text(self, settings: script.ProbeSettings) -> str:
        try:
            return pathlib.Path(settings.log_path).read_text()
        except FileNotFoundError:
            return ""

    def stop(self, settings: script.ProbeSettings) -> str:
        return self.sh(script.stop_command(settings)).stdout

    def fast(self, settings: script.ProbeSettings, enabled: bool) -> None:
        self.sh(script.fast_mode_command(settings, enabled))

    def wait_for_good_probes(self, settings: script.ProbeSettings, count: int = 3,
                             timeout: float = 10.0) -> analysis.MeterLog:
        """Wait for a healthy baseline: ``count`` good probes in a row at the end."""
        deadline = time.monotonic() + timeout
        while True:
            log = analysis.parse_log(self.log_text(settings))
            if analysis.consecutive_successes_at_end(log.records) >= count:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"no healthy baseline; log so far:\n"
                                   f"{self.log_text(settings)}")
            time.sleep(0.05)

    def kill_all(self) -> None:
        """Cleanup: SIGKILL every process group this guest started."""
        for pid in self.pids:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        for pid in self.pids:
            wait_group_gone(pid, 1.0)
        REAPER.reap()
        self.pids.clear()


# -- Comparing the analysis with the truth ---------------------------------------


def match_outages(truth: Sequence[TrueOutage], found: Sequence[analysis.Outage],
                  slack: float = 0.3) -> list[Optional[analysis.Outage]]:
    """For each true outage, the found outage overlapping it most (None if none)."""
    result = []
    for true in truth:
        lo = true.start.time - slack
        hi = (true.end.time if true.end else float("inf")) + slack
        best, best_overlap = None, 0.0
        for outage in found:
            overlap = min(outage.end, hi) - max(outage.start, lo)
            if overlap > best_overlap or (best is None and overlap >= 0
                                          and outage.start <= hi and outage.end >= lo):
                best, best_overlap = outage, overlap
        result.append(best)
    return result
