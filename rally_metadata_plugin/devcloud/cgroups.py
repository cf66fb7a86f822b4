"""CPU control groups: who gets the CPU when the devcloud's machine is saturated.

On a real cloud each guest has vCPUs of its own, the metadata service and
the control plane run on their own hosts, and Rally on another machine;
here they all share this machine's cores. Under load the kernel shares the
CPU per runnable task, so the side with the most runnable threads wins: a
few hundred probing guests outnumbered the metadata service's one thread
(50 guests at default rates failed 34 to 50 of 50 iterations, every one on
probes timing out), and at 200 guests the devcloud's and Rally's threads,
dozens of them runnable at once, left the metadata server's event loop a
twenty-fifth of a CPU. A probe that times out because its guest or the
service got no CPU is an outage the cloud never had.

So each side is a group weighing a fixed share, whatever its number of
threads (the weights below): the metadata server process first, then the
guests together, the devcloud's own process and Rally's (the main command
puts it there) each as one busy task. The weights only matter while the
machine is saturated; an idle machine gives each what it asks.

A group is ``rally-metadata-devcloud-<pid>-<n>`` (the n-th group of process
pid) in the ``cpu`` hierarchy of cgroup v1 (``/sys/fs/cgroup/cpu``,
``cpu.shares``) or at the root of a cgroup v2 hierarchy (``cpu.weight``),
made when this process may (root, a writable hierarchy); otherwise
everything shares the CPU as before and the log says so. A guest's shell
joins the guests' group before the command it was given (see
:meth:`CpuGroup.join_command`), so nothing the command forks can escape,
at the cost of no process of its own (every SSH command of every guest
pays it); a whole process joins with :meth:`CpuGroup.add`. Groups are
removed by whoever made them once their processes are gone or moved out;
the ones of processes that died first are removed by the next devcloud, or
by the main command that ran the devcloud.
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
#: cgroup v1 ``cpu.shares`` of each group (1024: what one busy task at nice 0
#: weighs); cgroup v2's ``cpu.weight`` is the same on its scale (see
#: :func:`weight_for`). Under contention each group gets its weight's share of
#: the CPU however many threads it runs; the weights only matter while the
#: machine is saturated.
#:
#: The guests, together, weigh one busy task: a few hundred probing guests
#: cannot crowd out the rest. (At 256, while the metadata service shared the
#: devcloud's process, the guests starved: probes timed out on a service that
#: answered in milliseconds; lower still, 10-17 s without a probe.)
V1_SHARES = 1024
#: The metadata server process, the cloud service the guests measure, comes
#: first: it needs little (6 to 9 CPU s a 200-guest run), and every
#: millisecond it waits for a CPU is added to every probe in flight. In the
#: root group with the devcloud's and Rally's threads, each of which weighs
#: as much as it does, its event loop waited on the run queue about a second
#: in every second of a 200-guest start-up (0.04 CPU s of 1 s; 38 stalls of up
#: to 7 s, 66 to 102 of 200 iterations failing on probe timeouts).
METADATA_SHARES = 16384
#: The devcloud's own process (APIs, SSH gateway, migrations) and, run by
#: ``tools/devcloud_task.py``, Rally's: a real cloud's control plane and the
#: Rally host are other machines. Each weighs one busy task, whatever number
#: of its threads are runnable (up to 46 of the devcloud's and 17 of Rally's
#: at once were counted in a 200-guest start-up): they run slower under
#: overload, which their timeouts allow, instead of starving the guests and
#: the metadata service, which turns into measured outages.
CONTROL_SHARES = 1024


def weight_for(weight_file: str, shares: int) -> int:
    """``shares`` (cgroup v1 ``cpu.shares``) for ``weight_file``: itself, or
    on cgroup v2's ``cpu.weight`` scale (100 for 1024, within 1..10000)."""
    if weight_file == "cpu.shares":
        return shares
    return max(1, min(10000, round(shares * 100 / 1024)))


#: the guests' weight on cgroup v2's scale (its default)
V2_WEIGHT = weight_for("cpu.weight", V1_SHARES)


def groups_control_plane(guests: str) -> bool:
    """Whether the devcloud's own process and Rally get their groups
    (:data:`CONTROL_SHARES`) with ``guests`` ("process" or "vm").

    Not with VM guests: their QEMUs (TCG), several busy threads each, are
    most of the load, and with the devcloud and Rally held to one task's
    weight beside them the VM e2e measured a 0.44 s outage of the truth as
    none, twice (why exactly is not pinned down)."""
    return guests != "vm"


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

    def add(self, pid: int) -> bool:
        """Move process ``pid``, all its threads, into the group (what it
        forks later is born there); False, and a warning, if it cannot."""
        try:
            self.procs.write_text(f"{pid}\n")
            return True
        except OSError as e:
            LOG.warning("process %d not moved to the CPU group %s: %s",
                        pid, self.path, e.strerror or e)
            return False

    def leave(self, pid: int) -> None:
        """Move process ``pid`` back to the group's parent (so that the
        group can be removed while the process lives on)."""
        try:
            (self.path.parent / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as e:
            LOG.warning("process %d not moved out of the CPU group %s: %s",
                        pid, self.path, e.strerror or e)

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
                    LOG.warning("CPU group %s not removed: %s "
                                "(processes: %s)", self.path, e, self.pids())
                    return False
            time.sleep(0.02)


def _hierarchies() -> list[tuple[Path, str]]:
    """(directory, weight file) of each hierarchy that could hold a group,
    most likely first."""
    found = []
    if (_V1_CPU / "cpu.shares").exists():
        found.append((_V1_CPU, "cpu.shares"))
    for root in _V2_ROOTS:
        try:
            controllers = (root / "cgroup.subtree_control").read_text().split()
        except OSError:
            continue
        if "cpu" in controllers:
            found.append((root, "cpu.weight"))
    return found


def stale_groups(parent: Path | None = None) -> list[Path]:
    """The groups of devclouds that are gone (killed before they could
    remove theirs), in ``parent`` or in every hierarchy."""
    parents = ([parent] if parent is not None
               else [p for p, _ in _hierarchies()])
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


def remove_stale(parent: Path | None = None, timeout: float = 0.0) -> None:
    """Remove :func:`stale_groups`; one with processes left after
    ``timeout`` seconds (a killed process leaving as it exits) stays."""
    for group in stale_groups(parent):
        try:
            group.rmdir()
        except OSError as e:
            if timeout > 0 and e.errno == errno.EBUSY:
                CpuGroup(group, "", 0).remove(timeout)


def cpu_group(what: str, shares: int, owner: int | None = None,
              hierarchies: list[tuple[Path, str]] | None = None
              ) -> CpuGroup | None:
    """A new, empty CPU group weighing ``shares`` (cgroup v1 scale) for
    ``what`` (named in the log), owned by the process ``owner`` (default:
    this one); None, and a warning, when no hierarchy takes one here."""
    owner = os.getpid() if owner is None else owner
    name = f"{PREFIX}{owner}-{next(_SEQUENCE)}"
    problems = []
    for parent, weight_file in (
            _hierarchies() if hierarchies is None else hierarchies):
        remove_stale(parent)
        group = CpuGroup(parent / name, weight_file,
                         weight_for(weight_file, shares))
        try:
            group.create()
        except OSError as e:
            problems.append(f"{parent}: {e.strerror or e}")
            continue
        return group
    LOG.warning(
        "%s share%s the CPU with every other process as equals (no CPU "
        "control group could be made%s): past what this machine can carry, "
        "probes will time out rather than start late", what,
        "" if what.endswith("s") else "s",
        ": " + "; ".join(problems) if problems else ", no cgroup 'cpu' "
        "controller found")
    return None


def guest_cpu_group(owner: int | None = None,
                    hierarchies: list[tuple[Path, str]] | None = None
                    ) -> CpuGroup | None:
    """The guests' group (:data:`V1_SHARES`) of the devcloud ``owner``."""
    return cpu_group("guests", V1_SHARES, owner, hierarchies)
