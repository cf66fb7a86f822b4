"""Process state from ``/proc`` (Linux): the one parser of ``/proc/PID/stat``.

Used by the devcloud's process guests (:mod:`.guests`: is a process frozen,
gone?) and by the test-support guest sandbox
(:mod:`rally_metadata_plugin.testing`: which processes of a meter's process
group are still alive?).  Standard library only; no root needed.
"""

from __future__ import annotations

import os
from typing import Iterator, NamedTuple, Optional

#: States of a process that has exited: zombie, dead.
EXITED = ("Z", "X")


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` this project reads."""

    state: str        # one letter: R, S, D, T, t, Z, X ...
    pgid: int


def proc_stat(pid: int) -> Optional[ProcStat]:
    """State and process group of ``pid`` (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name may contain spaces/parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    return ProcStat(fields[0].decode("ascii", "replace"), int(fields[2]))


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
