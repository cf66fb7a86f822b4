"""The guests' CPU group: process guests share the CPU as one busy task.

On a real cloud each guest has vCPUs of its own; here every guest process
shares this machine's cores with the devcloud (APIs, SSH, the metadata
server process) and with Rally. Under load the kernel shares the CPU per
runnable task, and a few hundred probing guests then outnumber the metadata
service's one thread: it answers late, probes time out, and a timed-out
probe is an outage the cloud never had (measured: 50 guests at the task's
default probe rates failed 34 to 50 of 50 iterations, every one on probes
timing out).

So the guests' processes share one CPU control group that weighs what one
busy task weighs: under contention all guests together get about what one
devcloud or Rally thread gets, and each of those the same. The weight only
matters while the machine is saturated; an idle machine gives the guests
all they ask.

The group is ``rally-metadata-devcloud-<pid>-<n>`` (the n-th devcloud of
process pid) in the ``cpu`` hierarchy of
cgroup v1 (``/sys/fs/cgroup/cpu``, ``cpu.shares``) or at the root of a
cgroup v2 hierarchy (``cpu.weight``), made when this process may (root, a
writable hierarchy); otherwise the guests run in the devcloud's own group,
as before, and the devcloud says so in its log. A process joins it by
writing its pid to ``cgroup.procs`` (see :meth:`CpuGroup.join_command`): the
guest's shell does so before the command it was given, so nothing the
command forks can escape, and it costs no process of its own (every SSH
command of every guest pays it). The group is removed when the devcloud
stops; the ones of devclouds that died without stopping are removed by the
next one, or by the main command that ran the devcloud.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import shlex
import time
from pathlib import Path

from rally_metadata_plugin.devcloud.procfs import is_alive

LOG = logging.getLogger(__name__)

PREFIX = "rally-metadata-devcloud-"
#: cgroup v1 ``cpu.shares`` of the guests' group: what a task at nice 0
#: weighs. A quarter of that (256) was right while the metadata service
#: shared the devcloud's process, which it had to win the CPU for; with a
#: process of its own it needs little (3 to 6 CPU s a 200-guest run), and at
#: 256 the guests starved instead: at 200 guests and 1 s probes their probes
#: timed out while the service answered in milliseconds (12, 1, 0, 42 and 0
#: of 200 iterations failed in five runs; at 1024, 0 in eight runs and 18
#: in one, SSH reads during the start-up burst). Lower still starved them outright (128: 10-17 s without a probe).
V1_SHARES = 1024
#: the same weight on cgroup v2's scale (its default)
V2_WEIGHT = 100

_SEQUENCE = itertools.count(1)     # devclouds of this process (the tests')
_V1_CPU = Path("/sys/fs/cgroup/cpu")
_V2_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))

#: Put before a guest's command: its shell joins the group ({procs}). A
#: failed join leaves it in the devcloud's group, says nothing on the guest's
#: stderr (the braces: the redirection that fails is inside them) and leaves
#: $? at 0 for the command.
_JOIN = '{{ echo $$ >{procs}; }} 2>/dev/null || :\n'


class CpuGroup:
    """One cgroup directory whose ``weight_file`` weighs its processes."""

    def __init__(self, path: Path, weight_file: str, weight: int) -> None:
        self.path = path
        self.weight_file = weight_file
        self.weight = weight

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def create(self) -> None:
        self.path.mkdir()
        try:
            (self.path / self.weight_file).write_text(f"{self.weight}\n")
        except OSError:
            self.path.rmdir()
            raise

    def join_command(self, command: str) -> str:
        """``command`` (a shell's ``-c`` text), run once its shell joined."""
        return _JOIN.format(procs=shlex.quote(str(self.procs))) + command

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs.read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self, timeout: float = 1.0) -> bool:
        """Remove the group; False if it still holds processes after
        ``timeout`` seconds (killed ones leave it as they exit)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    LOG.warning("guests' CPU group %s not removed: %s "
                                "(processes: %s)", self.path, e, self.pids())
                    return False
            time.sleep(0.02)


def _hierarchies() -> list[tuple[Path, str, int]]:
    """(directory, weight file, weight) of each hierarchy that could hold
    the group, most likely first."""
    found = []
    if (_V1_CPU / "cpu.shares").exists():
        found.append((_V1_CPU, "cpu.shares", V1_SHARES))
    for root in _V2_ROOTS:
        try:
            controllers = (root / "cgroup.subtree_control").read_text().split()
        except OSError:
            continue
        if "cpu" in controllers:
            found.append((root, "cpu.weight", V2_WEIGHT))
    return found


def stale_groups(parent: Path | None = None) -> list[Path]:
    """The groups of devclouds that are gone (killed before they could
    remove theirs), in ``parent`` or in every hierarchy."""
    parents = ([parent] if parent is not None
               else [p for p, _, _ in _hierarchies()])
    found = []
    for directory in parents:
        try:
            entries = list(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            owner, _, seq = entry.name[len(PREFIX):].partition("-")
            # a zombie owner cannot remove its group any more either
            if (entry.name.startswith(PREFIX) and owner.isdigit()
                    and seq.isdigit() and not is_alive(int(owner))):
                found.append(entry)
    return found


def remove_stale(parent: Path | None = None) -> None:
    """Remove :func:`stale_groups`; one with processes left stays."""
    for group in stale_groups(parent):
        try:
            group.rmdir()
        except OSError:
            pass


def guest_cpu_group(owner: int | None = None,
                    hierarchies: list[tuple[Path, str, int]] | None = None
                    ) -> CpuGroup | None:
    """A new, empty CPU group for the guests of the devcloud ``owner``
    (default: this process); None when no hierarchy takes one here."""
    owner = os.getpid() if owner is None else owner
    name = f"{PREFIX}{owner}-{next(_SEQUENCE)}"
    problems = []
    for parent, weight_file, weight in (
            _hierarchies() if hierarchies is None else hierarchies):
        remove_stale(parent)
        group = CpuGroup(parent / name, weight_file, weight)
        try:
            group.create()
        except OSError as e:
            problems.append(f"{parent}: {e.strerror or e}")
            continue
        return group
    LOG.warning(
        "guests share the CPU with the devcloud as equals (no CPU control "
        "group could be made%s): past what this machine can carry, probes "
        "will time out rather than start late",
        ": " + "; ".join(problems) if problems else ", no cgroup 'cpu' "
        "controller found")
    return None
