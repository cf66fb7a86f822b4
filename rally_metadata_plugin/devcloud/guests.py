"""Guests: the "VMs" of the devcloud are process trees on this machine.

Each ACTIVE server gets a home directory, a ``bin`` directory with a
``hostname`` shim, and an environment in which a real POSIX shell runs the
commands that arrive over SSH (see :mod:`.ssh`). Every process of a guest
carries ``DEVCLOUD_GUEST=<server uuid>`` in its environment; descendants
inherit it, so the guest's processes, detached ones included, are found by
scanning ``/proc/*/environ``. That is how a switchover pause really freezes
the guest (SIGSTOP ... SIGCONT), how a reboot (a profile's ``guest_reboot``)
and deletion really kill it. No root needed: a user can read its own
processes' environments.
"""

from __future__ import annotations

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
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.procfs import (EXITED, is_alive, pids,
                                                   proc_state)
from rally_metadata_plugin.devcloud.profiles import MigrationPlan

LOG = logging.getLogger(__name__)

TAG = "DEVCLOUD_GUEST"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def shell_argv() -> list[str]:
    """``busybox sh`` when available (what CirrOS runs), else /bin/sh."""
    busybox = shutil.which("busybox")
    return [busybox, "sh"] if busybox else ["/bin/sh"]


def tagged_processes(server_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries the tag."""
    return all_tagged_processes().get(server_id, [])


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


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Guest:
    """The runtime of one server: directories, environment, process tree."""

    def __init__(self, server: Server, root: Path, metadata_url: str,
                 user: str) -> None:
        self.server_id = server.id
        self.hostname = server.hostname
        self.home = root / server.id
        self.bin_dir = self.home / ".devcloud-bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        shim = self.bin_dir / "hostname"
        # printf, not echo: a hostname never needs escapes, but be exact
        shim.write_text(f"#!/bin/sh\nprintf '%s\\n' '{self.hostname}'\n")
        shim.chmod(0o755)
        self.env = {
            "PATH": f"{self.bin_dir}:{SYSTEM_PATH}",
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
        proc = subprocess.Popen(
            shell_argv() + ["-c", command], cwd=self.home, env=self.env,
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
            _signal_all(fresh, signal.SIGSTOP)
            stopped.update(fresh)
        # SIGSTOP is delivered asynchronously: wait until it has landed
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and any(
                proc_state(p) not in (None, "T", "t", *EXITED)
                for p in stopped):
            time.sleep(0.002)

    def thaw(self) -> None:
        _signal_all(self.processes(), signal.SIGCONT)
        self._running.set()

    def kill_processes(self, timeout: float = 3.0) -> int:
        """SIGKILL every process of the guest, frozen ones too, as a reboot
        does; returns how many there were. Commands may start afterwards."""
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            pids = self.processes()
            if not pids:
                break
            _signal_all(pids, signal.SIGKILL)
            killed.update(pids)
            if time.monotonic() > deadline:
                LOG.warning("guest %s: processes survive SIGKILL: %s",
                            self.server_id, pids)
                break
            time.sleep(0.01)
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


class GuestManager:
    """Creates guests for ACTIVE servers, kills them with their server.

    Implements :class:`~.model.backend.CloudListener` and the migration
    engine's :class:`~.migration_engine.Freezer` and
    :class:`~.migration_engine.SwitchoverEffect` (the guest reboot).

    :param metadata_url: gives the (stable) metadata endpoint of a server.
    """

    def __init__(self, backend: CloudBackend, root: Path,
                 metadata_url: Callable[[str], str], user: str) -> None:
        self._backend = backend
        self._root = root
        self._metadata_url = metadata_url
        self._user = user
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
                          self._user)
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
