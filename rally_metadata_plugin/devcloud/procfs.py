"""Process state from ``/proc`` (Linux): the one parser of ``/proc/PID/stat``,
and the one way to kill a set of processes that keeps forking.

Used by the devcloud's process guests (:mod:`.guests`: is a process frozen,
gone?) and by the test-support guest sandbox
(:mod:`rally_metadata_plugin.testing`: which processes of a meter's process
group are still alive?).  Standard library only; no root needed.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

_TICKS = os.sysconf("SC_CLK_TCK")

#: States of a process that has exited: zombie, dead.
EXITED = ("Z", "X")


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` this project reads."""

    state: str        # one letter: R, S, D, T, t, Z, X ...
    pgid: int
    ppid: int = 0
    cpu_seconds: float = 0.0            # user + system, its own
    children_cpu_seconds: float = 0.0   # of the children it has reaped


def proc_stat(pid: int) -> Optional[ProcStat]:
    """State and process group of ``pid`` (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name may contain spaces/parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    # stat(5): utime, stime, cutime, cstime are fields 14-17, in clock ticks
    ticks = [int(f) for f in fields[11:15]]
    return ProcStat(fields[0].decode("ascii", "replace"), int(fields[2]),
                    int(fields[1]), (ticks[0] + ticks[1]) / _TICKS,
                    (ticks[2] + ticks[3]) / _TICKS)


def proc_argv(pid: int) -> Optional[list[str]]:
    """The command line of ``pid``, one string per argument (None: gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]]


def proc_state(pid: int) -> Optional[str]:
    """One-letter state of ``pid`` (None: gone)."""
    stat = proc_stat(pid)
    return stat.state if stat else None


def is_alive(pid: int) -> bool:
    """``pid`` exists and has not exited (a zombie is not alive)."""
    return proc_state(pid) not in (None, *EXITED)


def pids() -> Iterator[int]:
    """Every process id in ``/proc``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for pid in pids():
        stat = proc_stat(pid)
        if stat and stat.pgid == pgid and stat.state not in EXITED:
            members.append(pid)
    return members


def signal_all(pids: Iterable[int], sig: int) -> list[int]:
    """Send ``sig`` to each of ``pids``; returns those signalled (the ones
    gone or not ours are skipped)."""
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            signalled.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return signalled


def kill_until_gone(find: Callable[[], list[int]],
                    timeout: float) -> tuple[set[int], list[int]]:
    """SIGKILL what ``find`` returns, again and again, until it returns nothing.

    A shell loop forks new children while it is being killed, so one round
    is not enough.  Returns the pids killed and those still found when
    ``timeout`` ran out (empty on success).
    """
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if not found:
            return killed, []
        killed.update(signal_all(found, signal.SIGKILL))
        if time.monotonic() > deadline:
            return killed, found
        time.sleep(0.01)
