"""Guests: the "VMs" of the devcloud are process trees on this machine.

Each ACTIVE server gets a home directory and an environment in which a real
POSIX shell (busybox ``sh``) runs the commands that arrive over SSH (see
:mod:`.ssh`). Every process of a guest carries ``DEVCLOUD_GUEST=<server
uuid>`` in its environment; descendants inherit it, so the guest's
processes, detached ones included, are found by scanning
``/proc/*/environ``. That is how a switchover pause really freezes the guest
(SIGSTOP ... SIGCONT), how a reboot (a profile's ``guest_reboot``) and
deletion really kill it. No root needed: a user can read its own processes'
environments.

The guest's hostname is the server's: each command starts in a UTS
namespace of its own named after the server (:class:`Naming`), so
``/proc/sys/kernel/hostname`` (what the meter reads), ``hostname`` and
``uname -n`` all agree, whichever ``hostname`` the shell runs. That takes
root, or unprivileged user namespaces; without either, a ``hostname`` script
first in ``PATH`` stands in, which a busybox that runs its applets before
``PATH`` (Debian's ``busybox-static``) bypasses: the devcloud says so in its
log.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.busybox import (runs_applets_first,
                                                    shell_argv)
from rally_metadata_plugin.devcloud.cgroups import CpuGroup, guest_cpu_group
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.procfs import (EXITED, is_alive,
                                                   kill_until_gone, pids,
                                                   proc_state, signal_all)
from rally_metadata_plugin.devcloud.profiles import MigrationPlan

LOG = logging.getLogger(__name__)

TAG = "DEVCLOUD_GUEST"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Run by the guest's shell in the command's new UTS namespace: name it
#: ($0), then become the command ("$@"). Root may write the name; in a user
#: namespace only sethostname(2) may (``hostname``, with the kept caps).
_NAME_AND_EXEC = ('{ printf %s "$0" >/proc/sys/kernel/hostname || '
                  'hostname "$0"; } 2>/dev/null; exec "$@"')


@dataclasses.dataclass(frozen=True)
class Naming:
    """How a guest's commands get the guest's hostname.

    ``prefix`` (``unshare`` with its options) starts each command in a new
    UTS namespace named by :data:`_NAME_AND_EXEC`; empty when this machine
    allows no such namespace, and then ``shim`` says that a ``hostname``
    script in the guest's ``PATH`` stands in (``shim_bypassed``: this
    shell runs its own ``hostname`` applet instead).
    """

    prefix: tuple[str, ...]
    shell: tuple[str, ...]
    shim_bypassed: bool = False

    @property
    def shim(self) -> bool:
        return not self.prefix

    def argv(self, hostname: str, command: str) -> list[str]:
        run = [*self.shell, "-c", command]
        if not self.prefix:
            return run
        return [*self.prefix, *self.shell, "-c", _NAME_AND_EXEC, hostname,
                *run]

    @classmethod
    def detect(cls, shell: tuple[str, ...]) -> "Naming":
        """The first way that really names a probe command (see
        :func:`naming_for`, which asks once)."""
        unshare = shutil.which("unshare")
        candidates = []
        if unshare and os.geteuid() == 0:
            candidates.append((unshare, "--uts"))
        if unshare:
            candidates.append((unshare, "--user", "--map-current-user",
                               "--keep-caps", "--uts"))
        for prefix in candidates:
            naming = cls(prefix, shell)
            if _prints(naming.argv("devcloud-probe",
                                   "cat /proc/sys/kernel/hostname"),
                       {"PATH": SYSTEM_PATH}) == "devcloud-probe":
                return naming
        bypassed = runs_applets_first(shell)
        if bypassed:
            LOG.warning(
                "guests cannot have hostnames of their own here: no UTS "
                "namespace (not root, no user namespaces), and %s runs its "
                "own applets before PATH (a static build such as Debian's "
                "busybox-static), so the guests' hostname shim is bypassed: "
                "`hostname` in a guest prints this machine's name",
                " ".join(shell))
        else:
            LOG.warning("guests cannot have hostnames of their own here (not "
                        "root, no user namespaces): a `hostname` script in "
                        "PATH stands in; /proc/sys/kernel/hostname is this "
                        "machine's")
        return cls((), shell, shim_bypassed=bypassed)


@functools.lru_cache(maxsize=None)
def naming_for(shell: tuple[str, ...]) -> Naming:
    """:meth:`Naming.detect`, once per shell and process."""
    return Naming.detect(shell)


def _prints(argv: list[str], env: dict[str, str]) -> str | None:
    """What ``argv`` prints (stripped), None if it fails."""
    try:
        result = subprocess.run(argv, env=env, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def tagged_processes(server_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries the tag, as
    found by a scan that started after this call (shared with the threads
    that asked meanwhile: see :class:`CoalescedScan`)."""
    return list(_shared_scan().get(server_id, []))


class CoalescedScan:
    """One ``scan`` of every process for the threads that want one at once.

    A scan reads the environment of every process on the machine (tens of
    milliseconds with a thousand), and each switchover freezes, then thaws,
    a guest with one or more: with hundreds of guests migrating, scans ran
    side by side by the dozen, each returning the same processes. A caller
    here gets the result of a scan that *started after it asked* (so it
    sees every process that existed when it asked, as its own scan would):
    the one it runs itself, or the next one another thread runs while it
    waits, never the one already under way.
    """

    def __init__(self, scan: Callable[[], dict[str, list[int]]]) -> None:
        self._scan = scan
        self._changed = threading.Condition()
        self._running = False
        self._done = 0              # scans completed
        self._result: dict[str, list[int]] = {}

    def __call__(self) -> dict[str, list[int]]:
        with self._changed:
            # the scan under way started before this call: wait for the next
            wanted = self._done + (2 if self._running else 1)
            while self._done < wanted:
                if self._running:
                    self._changed.wait()
                    continue
                self._running = True
                self._changed.release()
                try:
                    result = self._scan()
                finally:
                    self._changed.acquire()
                    self._running = False
                    self._changed.notify_all()
                self._done += 1
                self._result = result
            return self._result


def all_tagged_processes() -> dict[str, list[int]]:
    """Every live guest process on this machine, by the server it belongs to."""
    prefix = f"{TAG}=".encode()
    me = os.getpid()
    found: dict[str, list[int]] = {}
    for pid in pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                variables = f.read().split(b"\0")
        except OSError:
            continue
        for variable in variables:
            if variable.startswith(prefix) and is_alive(pid):
                server_id = variable[len(prefix):].decode()
                found.setdefault(server_id, []).append(pid)
    return found


_shared_scan = CoalescedScan(all_tagged_processes)


class Guest:
    """The runtime of one server: directories, environment, process tree."""

    def __init__(self, server: Server, root: Path, metadata_url: str,
                 user: str, naming: Naming, applets: Path | None = None,
                 cpu_group: CpuGroup | None = None) -> None:
        self.server_id = server.id
        self._cpu_group = cpu_group
        self.hostname = server.hostname
        self.home = root / server.id
        self.home.mkdir(parents=True, exist_ok=True)
        self._naming = naming
        path = SYSTEM_PATH
        if applets is not None:
            path = f"{applets}:{path}"
        if naming.shim:
            bin_dir = self.home / ".devcloud-bin"
            bin_dir.mkdir(exist_ok=True)
            shim = bin_dir / "hostname"
            # printf, not echo: a hostname never needs escapes, but be exact
            shim.write_text(f"#!/bin/sh\nprintf '%s\\n' '{self.hostname}'\n")
            shim.chmod(0o755)
            path = f"{bin_dir}:{path}"
        self.env = {
            "PATH": path,
            "HOME": str(self.home),
            "PWD": str(self.home),
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/sh",
            "HOSTNAME": self.hostname,
            "LANG": "C",
            # in-guest requests to 169.254.169.254 go to this server's own
            # metadata endpoint; no_proxy is deliberately absent
            "http_proxy": metadata_url,
            TAG: server.id,
        }
        self._running = threading.Event()
        self._running.set()
        self._children: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def spawn(self, command: str) -> subprocess.Popen:
        """Start ``command`` under the guest's shell, pipes on all fds.

        Blocks while the guest is frozen: its sshd would be frozen too.
        """
        self._running.wait()
        if self._cpu_group is not None:
            command = self._cpu_group.join_command(command)
        proc = subprocess.Popen(
            self._naming.argv(self.hostname, command), cwd=self.home,
            env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, bufsize=0,
            # a session of its own: a Ctrl-C on the devcloud's terminal must
            # not reach the guest, and the guest outlives SSH channels
            start_new_session=True)
        with self._lock:
            self._children = {c for c in self._children if c.poll() is None}
            self._children.add(proc)
        return proc

    def processes(self) -> list[int]:
        return tagged_processes(self.server_id)

    def freeze(self) -> None:
        """SIGSTOP every process, rescanning until no new one appears (a
        process may fork while the first ones are being stopped)."""
        self._running.clear()
        stopped: set[int] = set()
        for _ in range(50):
            fresh = [p for p in self.processes() if p not in stopped]
            if not fresh:
                break
            signal_all(fresh, signal.SIGSTOP)
            stopped.update(fresh)
        # SIGSTOP is delivered asynchronously: wait until it has landed
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and any(
                proc_state(p) not in (None, "T", "t", *EXITED)
                for p in stopped):
            time.sleep(0.002)

    def thaw(self) -> None:
        signal_all(self.processes(), signal.SIGCONT)
        self._running.set()

    def kill_processes(self, timeout: float = 3.0) -> int:
        """SIGKILL every process of the guest, frozen ones too, as a reboot
        does; returns how many there were. Commands may start afterwards."""
        killed, survivors = kill_until_gone(self.processes, timeout)
        if survivors:
            LOG.warning("guest %s: processes survive SIGKILL: %s",
                        self.server_id, survivors)
        return len(killed)

    def kill(self, timeout: float = 3.0) -> None:
        """SIGKILL the whole guest, detached processes included."""
        self._running.set()       # release spawners waiting on a freeze
        self.kill_processes(timeout)
        with self._lock:
            children, self._children = self._children, set()
        for child in children:   # reap our direct children
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


#: The busybox applets a CirrOS guest finds before any other program of the
#: same name (its /bin is busybox's; curl is its only other HTTP client).
CIRROS_APPLETS = ("wget",)


def cirros_applets(directory: Path, shell: tuple[str, ...]) -> Path | None:
    """A directory of links to the guests' busybox for :data:`CIRROS_APPLETS`,
    to put first in their ``PATH``; None when the shell is no busybox or runs
    its applets first anyway.

    Without it a guest would run this machine's GNU wget, or curl, where a
    CirrOS guest runs busybox wget: the meter's ``auto`` choice and its cost
    per probe (about 3.7 ms of CPU against curl's 11.4 ms) would differ.
    """
    busybox = shell[0]
    if os.path.basename(busybox) == "sh" or runs_applets_first(shell):
        return None
    directory.mkdir(parents=True, exist_ok=True)
    for applet in CIRROS_APPLETS:
        link = directory / applet
        if not link.is_symlink():
            link.symlink_to(busybox)
    return directory


class GuestManager:
    """Creates guests for ACTIVE servers, kills them with their server.

    Implements :class:`~.model.backend.CloudListener` and the migration
    engine's :class:`~.migration_engine.Freezer` and
    :class:`~.migration_engine.SwitchoverEffect` (the guest reboot).

    :param metadata_url: gives the (stable) metadata endpoint of a server.
    :param busybox: the busybox build whose ``sh`` guests run (None: the
        one on PATH).
    """

    def __init__(self, backend: CloudBackend, root: Path,
                 metadata_url: Callable[[str], str], user: str,
                 busybox: str | None = None) -> None:
        self._backend = backend
        self._root = root
        self._metadata_url = metadata_url
        self._user = user
        self.naming = naming_for(tuple(shell_argv(busybox)))
        self._applets = cirros_applets(root.parent / "guest-bin",
                                       self.naming.shell)
        #: the guests' CPU group, which yields to the metadata server
        #: (:mod:`.cgroups`); None where this machine allows none
        self.cpu_group = guest_cpu_group()
        self._guests: dict[str, Guest] = {}
        self._lock = threading.Lock()

    def guest(self, server_id: str) -> Guest | None:
        """The running guest of a server (created on first need)."""
        with self._lock:
            guest = self._guests.get(server_id)
            if guest is not None:
                return guest
            server = self._backend.compute.find_server(server_id)
            if server is None or server.status == "BUILD":
                return None
            guest = Guest(server, self._root, self._metadata_url(server.id),
                          self._user, self.naming, self._applets,
                          self.cpu_group)
            self._guests[server_id] = guest
            return guest

    # CloudListener

    def server_changed(self, server: Server) -> None:
        if server.status != "BUILD":
            self.guest(server.id)

    def server_deleted(self, server: Server) -> None:
        with self._lock:
            guest = self._guests.pop(server.id, None)
        if guest is not None:
            guest.kill()

    def outage_added(self, outage) -> None:
        pass

    # Freezer

    def freeze(self, server_id: str) -> None:
        guest = self.guest(server_id)
        if guest is not None:
            guest.freeze()

    def thaw(self, server_id: str) -> None:
        with self._lock:
            guest = self._guests.get(server_id)
        if guest is not None:
            guest.thaw()

    # SwitchoverEffect

    def switched_over(self, server_id: str, plan: MigrationPlan) -> dict:
        """A ``guest_reboot`` kills every process of the (frozen) guest."""
        if not plan.guest_reboot:
            return {}
        guest = self.guest(server_id)
        killed = guest.kill_processes() if guest is not None else 0
        LOG.info("guest %s rebooted at the switchover: %d processes killed",
                 server_id, killed)
        return {"guest_reboot_at": boottime.now(),
                "guest_processes_killed": killed}

    def kill_all(self) -> None:
        with self._lock:
            guests, self._guests = list(self._guests.values()), {}
        for guest in guests:
            guest.kill()

    def remove_cpu_group(self) -> None:
        """Remove the guests' CPU group once no process is left in it."""
        if self.cpu_group is not None and self.cpu_group.remove():
            self.cpu_group = None
