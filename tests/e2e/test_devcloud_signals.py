"""End to end: the main command aborted by a signal, or killed, leaves nothing behind.

Each test starts ``tools/devcloud_task.py`` as a user does, waits until the
Rally task is running (the devcloud's ground truth records finished live
migrations), signals the command and checks how it ended: its exit status
(128 + the signal), what it said, what it wrote, and that no process of the
run remains: no devcloud, no rally, no guest process.  A process belongs to
the run when its command line or environment names the run's output
directory (rally's ``--config-file``, the devcloud's ``--state-dir``, the
guests' ``HOME``), which tells it apart from other devclouds on the machine.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Optional

import pytest

from rally_metadata_plugin.devcloud import cgroups
from rally_metadata_plugin.devcloud.procfs import is_alive, pids

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAIN_COMMAND = ROOT / "tools" / "devcloud_task.py"

#: From the signal to the exit, asserted (measured: 5 to 10 s on an idle
#: 2-core machine, most of it three rally commands starting up: "task
#: abort", then "task report" and "task export" side by side).
ABORT_SECONDS = 30.0
#: After a second signal nothing is waited for.
HURRIED_SECONDS = 5.0
#: From a SIGKILL of the main command until the devcloud, rally and the
#: guests are gone (measured: well under a second).
ORPHAN_SECONDS = 10.0

#: One live migration per iteration, three iterations: an iteration lasts
#: about 8 s, so the task is still running after the second migration.
TASK_ARGS = '{"times": 3, "migrations": 1}'


def _as_from_a_terminal() -> None:
    # Ctrl-C and hang-up act on the command as in a terminal, even if this
    # test session was started with them ignored (a background job)
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


class MainCommand:
    """The main command running in the background, as a user starts it."""

    def __init__(self, out: pathlib.Path, *args: str) -> None:
        self.out = out
        env = dict(os.environ, RMP_VENV=sys.prefix)
        command = [sys.executable, str(MAIN_COMMAND), "--out", str(out), "--quiet", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env, preexec_fn=_as_from_a_terminal)
        self.stdout = self.stderr = ""
        self.descendants: dict[int, int] = {}
        self.signalled_at = 0.0
        self.exited_after = None

    def wait_for(self, what: str, ready, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                self.communicate()
                pytest.fail(f"the main command ended (exit {self.process.returncode}) before "
                            f"{what}:\n{self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:.0f} s")
            time.sleep(0.05)

    def wait_for_migrations(self, count: int) -> None:
        truth = self.out / "devcloud" / "truth.jsonl"
        self.wait_for(f"{count} finished live migration(s)",
                      lambda: truth.exists() and len(truth.read_text().splitlines()) >= count)

    def send(self, signum: int) -> None:
        if not self.signalled_at:
            self.signalled_at = time.monotonic()
            # its helpers too, whatever their command line
            self.descendants = descendants(self.process.pid)
        self.process.send_signal(signum)

    def communicate(self, timeout: float = 120.0) -> int:
        self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        if self.signalled_at:
            self.exited_after = time.monotonic() - self.signalled_at
        return self.process.returncode

    def describe(self) -> str:
        return f"stdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def _stat(pid: int) -> Optional[tuple[int, int]]:
    """(parent, start time) of a live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``, with its start time (which tells a
    reused pid apart)."""
    stats = {pid: stat for pid in pids() if (stat := _stat(pid)) and is_alive(pid)}
    found: dict[int, int] = {}
    parents = {root}
    while parents:
        children = {pid for pid, (ppid, _) in stats.items() if ppid in parents} - set(found)
        found.update({pid: stats[pid][1] for pid in children})
        parents = children
    return found


def processes_of_the_run(out: pathlib.Path, known: Optional[dict[int, int]] = None
                         ) -> dict[int, str]:
    """Live processes naming the run's output directory, with their command lines."""
    marker = str(out).encode()
    me = os.getpid()
    found = {}
    for pid in pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
            cwd = os.readlink(f"/proc/{pid}/cwd").encode()
        except OSError:
            continue
        ours = marker in cmdline or marker in environ or cwd.startswith(marker)
        if known and pid in known and (_stat(pid) or (0, 0))[1] == known[pid]:
            ours = True
        if ours and is_alive(pid):
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
    return found


def assert_nothing_left(run: "MainCommand", within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while ((left := processes_of_the_run(run.out, run.descendants))
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert left == {}, f"processes of the run still alive: {left}"
    # nor the guests' CPU group of a devcloud that is gone
    assert cgroups.stale_groups() == []


@pytest.fixture
def main_command(tmp_path):
    started: list[MainCommand] = []

    def start(*args: str) -> MainCommand:
        command = MainCommand(tmp_path / "out", *args)
        started.append(command)
        return command

    yield start
    for command in started:  # a failed test must not leave its run behind either
        command.kill()
        for pid in processes_of_the_run(command.out, command.descendants):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_aborts_the_task_and_stops_everything(main_command, signum):
    run = main_command("--profile", "healthy", "--seed", "3", "--task-args", TASK_ARGS)
    # the second migration: the first iteration has finished, the second is running
    run.wait_for_migrations(2)
    run.send(signum)
    status = run.communicate()
    name = signal.Signals(signum).name
    print(f"{name}: exit {status} {run.exited_after:.1f} s after the signal")

    assert status == 128 + signum, run.describe()
    assert run.exited_after < ABORT_SECONDS, run.describe()
    assert f"aborted by {name}" in run.stdout, run.describe()
    assert f"{name} received" in run.stderr
    assert "FAILED (SLA)" not in run.stdout and "PASSED" not in run.stdout
    assert_nothing_left(run)

    # the partial report: the finished iteration, in a task Rally marked aborted
    assert (run.out / "report.html").exists(), run.describe()
    (task,) = json.loads((run.out / "results.json").read_text())["tasks"]
    assert task["status"] == "aborted"
    (subtask,) = task["subtasks"]
    (workload,) = subtask["workloads"]
    assert len(workload["data"]) >= 1
    assert workload["data"][0]["error"] == []
    criteria = {s["criterion"]: s["success"] for s in workload["sla_results"]["sla"]}
    assert criteria["aborted_manually"] is False
    assert f"results (partial, {len(workload['data'])} iteration(s) finished)" in run.stdout
    assert (run.out / "task_uuid").read_text().strip() == task["uuid"]


def test_a_signal_before_the_task_exists_stops_everything(main_command):
    run = main_command("--profile", "healthy", "--seed", "3", "--task-args", TASK_ARGS)
    run.wait_for("the devcloud", lambda: (run.out / "devcloud" / "ready").exists())
    run.send(signal.SIGTERM)
    status = run.communicate()

    assert status == 128 + signal.SIGTERM, run.describe()
    assert run.exited_after < ABORT_SECONDS
    assert "aborted by SIGTERM" in run.stdout, run.describe()
    assert "no report: the Rally task had not been created yet" in run.stdout
    assert not (run.out / "results.json").exists()
    assert_nothing_left(run)


def test_a_second_signal_skips_the_waiting(main_command):
    run = main_command("--profile", "healthy", "--seed", "3", "--task-args", TASK_ARGS)
    run.wait_for_migrations(1)
    run.send(signal.SIGINT)
    time.sleep(0.3)
    run.send(signal.SIGINT)
    status = run.communicate()
    print(f"SIGINT twice: exit {status} {run.exited_after:.1f} s after the first")

    assert status == 130, run.describe()
    assert run.exited_after < HURRIED_SECONDS, run.describe()
    assert "aborted by SIGINT" in run.stdout
    assert "a second signal asked not to wait" in run.stdout
    assert_nothing_left(run)


def test_when_the_main_command_is_killed_the_devcloud_and_its_guests_die_too(main_command):
    run = main_command("--profile", "healthy", "--seed", "3", "--task-args", TASK_ARGS)
    run.wait_for_migrations(1)
    # the scenario now waits for the metadata to recover and collects the
    # meter's log: rally's load generator, orphaned then, would go on for
    # tens of seconds against the dead devcloud
    time.sleep(1.5)
    before = processes_of_the_run(run.out, descendants(run.process.pid))
    # the premise: the devcloud, rally and its load generator, the reaper
    assert any("rally-metadata-devcloud" in c for c in before.values()), before
    assert sum("rally --config-file" in c for c in before.values()) >= 2, before
    assert any("_reaper.py" in c for c in before.values()), before

    run.send(signal.SIGKILL)
    run.communicate()
    deadline = time.monotonic() + ORPHAN_SECONDS
    while processes_of_the_run(run.out, run.descendants) and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - run.signalled_at
    print(f"SIGKILL: the run's processes were gone {elapsed:.1f} s later")
    assert_nothing_left(run, within=0)


def test_a_killed_devcloud_leaves_no_guest_process(main_command):
    """The devcloud cannot stop its guests when SIGKILLed: the main command
    finds them by their tag and kills them, and says so."""
    run = main_command("--profile", "healthy", "--seed", "3",
                       "--task-args", '{"times": 1, "migrations": 3}')
    run.wait_for_migrations(1)  # of three: the guest's meter is running
    devcloud = json.loads((run.out / "devcloud" / "ready").read_text())["pid"]
    assert "rally-metadata-devcloud" in processes_of_the_run(run.out)[devcloud]
    probe = cgroups.cpu_group("a probe", 1024)
    if probe is not None:     # this machine has groups:
        probe.remove()
        # the devcloud's own process weighs one task (devcloud/cgroups.py)
        with open(f"/proc/{devcloud}/cgroup") as f:
            assert cgroups.PREFIX in f.read()
    run.descendants = descendants(run.process.pid)
    os.kill(devcloud, signal.SIGKILL)
    status = run.communicate()

    assert status in (1, 2), run.describe()  # the task failed without its cloud
    assert "WARNING: the devcloud did not stop cleanly (exit status -9)" in run.stdout
    assert "guest process(es) the devcloud left behind" in run.stdout, run.describe()
    assert_nothing_left(run)


def test_the_reaper_kills_the_groups_it_watches_once_its_creator_is_gone():
    reaper = subprocess.Popen([sys.executable, str(ROOT / "tools" / "_reaper.py")],
                              stdin=subprocess.PIPE, text=True, start_new_session=True)
    watched, forgotten = (subprocess.Popen(["sleep", "60"], start_new_session=True)
                          for _ in range(2))
    try:
        reaper.stdin.write(f"+{watched.pid}\n+{forgotten.pid}\n-{forgotten.pid}\n")
        reaper.stdin.flush()
        assert watched.poll() is None and forgotten.poll() is None
        reaper.stdin.close()    # as when its creator dies
        assert reaper.wait(timeout=10) == 0
        assert watched.wait(timeout=5) == -signal.SIGKILL
        assert forgotten.poll() is None
    finally:
        for process in (watched, forgotten, reaper):
            process.kill()
            process.wait()


def test_the_reaper_removes_the_directories_it_was_given_once_its_creator_is_gone(tmp_path):
    """Rally's CPU group, which a SIGKILLed main command cannot remove."""
    group, kept = tmp_path / "group", tmp_path / "kept"
    group.mkdir()
    kept.mkdir()
    (kept / "file").write_text("not empty")
    reaper = subprocess.Popen([sys.executable, str(ROOT / "tools" / "_reaper.py")],
                              stdin=subprocess.PIPE, text=True, start_new_session=True)
    reaper.stdin.write(f"@{group}\n@{tmp_path / 'absent'}\n")
    reaper.stdin.flush()
    assert group.exists()
    reaper.stdin.close()
    assert reaper.wait(timeout=15) == 0
    assert not group.exists()
    assert kept.exists()      # never named; a non-empty one would stay too
