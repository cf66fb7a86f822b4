"""A fake CirrOS guest that runs the real guest meter on this machine.

CirrOS has busybox ash and busybox applets (``wget``, ``sleep``, ``timeout``,
``setsid`` ...) plus curl, and neither bash nor python.  :class:`Guest`
emulates that with a private ``bin`` directory of symlinks to busybox that is
the *only* entry of ``PATH`` (:func:`make_guest_bin`); ``sh`` points at
busybox or at dash, and ``curl``/``wget`` are present only when asked for.

Two busybox builds (:data:`SHELLS`): ``busybox``, the one on ``PATH``, and
``busybox-static``, Debian's static build, which runs its own applets before
``PATH`` (see :mod:`rally_metadata_plugin.devcloud.busybox`): with it as
``sh`` a guest has every applet whatever its ``bin`` holds
(:func:`runs_applets_first`).  Its package conflicts with ``busybox``, so it
is never installed: ``tools/fetch-busybox-static`` extracts it into
:data:`STATIC_BUSYBOX_DIR` (``.ci/run`` does that).
It drives the meter with the very shell commands the Rally scenario sends
over SSH (:mod:`rally_metadata_plugin.core.probe_script`), optionally inside
a :class:`~.netns.NetNS`.

The devcloud's guests (:mod:`rally_metadata_plugin.devcloud.guests`) are
whole simulated VMs reached over SSH; this one is the minimal sandbox the
functional tests and ``tools/bench_meter.py`` need.  Both read process state
with :mod:`rally_metadata_plugin.devcloud.procfs`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from typing import Optional, Sequence

from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import probe_script as script
from rally_metadata_plugin.devcloud import busybox
from rally_metadata_plugin.devcloud.procfs import group_members
from rally_metadata_plugin.testing.netns import NetNS

BUSYBOX = shutil.which("busybox")
DASH = shutil.which("dash")
CURL = shutil.which("curl")

#: Where ``tools/fetch-busybox-static`` extracts Debian's busybox-static
#: package ($RMP_BUSYBOX_STATIC_DIR overrides it, as for that script).
STATIC_BUSYBOX_DIR = pathlib.Path(
    os.environ.get("RMP_BUSYBOX_STATIC_DIR")
    or pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    / "rally-metadata-plugin" / "busybox-static")

#: The busybox on PATH, and Debian's static busybox.
BUSYBOX_BUILDS = ("busybox", "busybox-static")
#: A guest's ``sh``: a busybox build, or dash (with the applets of the
#: busybox on PATH).
SHELLS = (*BUSYBOX_BUILDS, "dash")

#: Applets a CirrOS guest has (all busybox); ``sh`` is added separately.
APPLETS = (
    "ash", "sleep", "timeout", "setsid", "nohup", "cat", "rm", "mkdir", "kill", "hostname",
    "grep", "cut", "awk", "echo", "printf", "ls", "head", "tail", "tr", "sed", "true", "false",
    "test", "[", "env", "ps", "uptime", "touch", "mv", "cp", "wc", "expr",
)

_libc = ctypes.CDLL(None, use_errno=True)


def static_busybox() -> Optional[str]:
    """Debian's static busybox, if ``tools/fetch-busybox-static`` fetched it."""
    binary = STATIC_BUSYBOX_DIR / "bin" / "busybox"
    return str(binary) if os.access(binary, os.X_OK) else None


def busybox_binary(shell: str) -> Optional[str]:
    """The busybox whose applets a guest with this ``sh`` (or the busybox
    build of this name) has; None: not here."""
    return static_busybox() if shell == "busybox-static" else BUSYBOX


def shell_unavailable(shell: str) -> Optional[str]:
    """Why a guest with this ``sh`` cannot be built here (None: it can)."""
    if BUSYBOX is None:
        return "busybox is not installed (needed for the CirrOS applets)"
    if shell == "dash" and DASH is None:
        return "dash is not installed"
    if shell == "busybox-static" and static_busybox() is None:
        return (f"Debian's static busybox is not in {STATIC_BUSYBOX_DIR}: run "
                f"tools/fetch-busybox-static (.ci/run does)")
    return None


def runs_applets_first(shell: str) -> bool:
    """Whether a guest with this ``sh`` runs busybox applets before its
    ``PATH``, so that it has ``wget`` and every other applet whatever its
    ``bin`` holds."""
    return shell != "dash" and busybox.runs_applets_first((busybox_binary(shell), "sh"))


def make_guest_bin(directory: pathlib.Path, shell: str = "busybox",
                   tools: Sequence[str] = ("wget",)) -> pathlib.Path:
    """A bin directory for a CirrOS-like guest: busybox applets, ``sh``, HTTP tools.

    ``shell`` is one of :data:`SHELLS`; ``tools`` any of ``wget`` (busybox's)
    and ``curl`` (the real one; CirrOS ships curl).
    """
    box = busybox_binary(shell)
    if box is None:
        raise RuntimeError(shell_unavailable(shell))
    directory.mkdir(parents=True, exist_ok=True)
    for applet in APPLETS:
        (directory / applet).symlink_to(box)
    _link(directory / "sh", shell, {"busybox": box, "busybox-static": box, "dash": DASH},
          "shell")
    for tool in tools:
        _link(directory / tool, tool, {"wget": box, "curl": CURL}, "HTTP tool")
    return directory


def _link(path: pathlib.Path, name: str, choices: dict[str, Optional[str]],
          what: str) -> None:
    """Symlink ``path`` to the program ``choices[name]`` (None: not installed)."""
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}")
    if choices[name] is None:
        raise RuntimeError(f"{name} is not installed")
    path.symlink_to(choices[name])


def wait_group_gone(pgid: int, timeout: float = 3.0) -> list[int]:
    """Wait until process group ``pgid`` has no live member; returns what is left."""
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

    def argv(self, *args: str) -> list[str]:
        """The guest's ``sh`` with ``args``, inside the guest's netns if it has one."""
        argv = [str(self.bin / "sh"), *args]
        return self.netns.prefix + argv if self.netns else argv

    def sh(self, command: str, input: Optional[str] = None, timeout: float = 30,
           check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` with the guest's sh, as an SSH session would."""
        result = subprocess.run(self.argv("-c", command), input=input, capture_output=True,
                                text=True, env=self.env, timeout=timeout)
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
