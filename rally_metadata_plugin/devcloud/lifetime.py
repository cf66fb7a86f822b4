"""How a devcloud ends: on a stop signal, with its parent, and with its guests.

A devcloud's guest processes are started in sessions of their own (a guest's
meter even detaches itself with ``setsid``), so neither the devcloud's death
nor a kill of its process group reaches them: they are found by their tag
(:func:`.guests.all_tagged_processes`) and the homes under the devcloud's
``guests`` directory. :func:`kill_guest_processes` is what the devcloud runs
last when it stops, and what whoever started it runs when the devcloud could
not (it was SIGKILLed).

Linux only for the parent-death signal (``prctl(PR_SET_PDEATHSIG)`` through
ctypes); the watchdog on :func:`os.getppid` works everywhere.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from rally_metadata_plugin.devcloud.guests import all_tagged_processes
from rally_metadata_plugin.devcloud.procfs import kill_until_gone

#: The signals that stop a devcloud (and tools/devcloud_task.py).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_PR_SET_PDEATHSIG = 1


@functools.lru_cache(maxsize=None)
def _libc():
    """The C library (None: not Linux). Loaded once, before any fork, so
    that a child can call prctl between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent exits.

    False where that is not supported (not Linux). The setting survives
    ``exec``; it is cleared in forked children.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), ctypes.c_ulong(0),
                      ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0


def child_dies_with_parent(signum: int) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets
    ``signum`` when the calling process exits, even if that happens between
    fork and the prctl call; and Ctrl-C and hang-up act on it as on any
    program, whatever this process ignores."""
    parent = os.getpid()
    _libc()

    def preexec() -> None:
        for signum_ in (signal.SIGINT, signal.SIGHUP):
            signal.signal(signum_, signal.SIG_DFL)
        set_parent_death_signal(signum)
        if os.getppid() != parent:      # the parent died before prctl
            os._exit(128 + signum)

    return preexec


def handle_stop_signals(handler: Callable[[int, object], None]) -> list[int]:
    """Install ``handler`` for SIGTERM, and for SIGINT and SIGHUP unless they
    are ignored: ``nohup`` and a non-interactive shell's ``&`` ignore them on
    purpose. Returns the signals handled."""
    handled = []
    for signum in STOP_SIGNALS:
        if signum != signal.SIGTERM and signal.getsignal(signum) == signal.SIG_IGN:
            continue
        signal.signal(signum, handler)
        handled.append(signum)
    return handled


def stop_with_parent(stop: Callable[[], None], interval: float = 0.5) -> None:
    """Call ``stop`` once the process that started this one has exited.

    The kernel's parent-death signal (SIGTERM, which the caller handles with
    :func:`handle_stop_signals`) says so at once on Linux; a watchdog thread
    polling :func:`os.getppid` (a reparented process has a new parent) is
    the fallback everywhere.
    """
    parent = os.getppid()
    set_parent_death_signal(signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        stop()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def guest_processes(guests_root: Path) -> dict[str, list[int]]:
    """Live processes of the guests whose homes are in ``guests_root`` (one
    devcloud's ``state_dir/guests``), by server id."""
    try:
        ours = {entry.name for entry in guests_root.iterdir()}
    except OSError:
        return {}
    return {sid: pids for sid, pids in all_tagged_processes().items() if sid in ours}


def kill_guest_processes(guests_root: Path, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process of the guests in ``guests_root`` until none is
    left (a probe loop forks while it is being killed). Returns the pids
    killed; only processes of this user can be signalled."""
    killed, _ = kill_until_gone(
        lambda: [pid for pids in guest_processes(guests_root).values() for pid in pids],
        timeout)
    return sorted(killed)
