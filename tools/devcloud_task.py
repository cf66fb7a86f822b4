#!/usr/bin/env python3
"""Run ``tasks/metadata_lm.yaml`` on the local devcloud and write the HTML report.

    python3 tools/devcloud_task.py [--profile healthy] [--seed 1] [--out out/devcloud]

On first use it creates ``.venv`` and installs the project.  Then it starts
the devcloud, creates a Rally database and environment inside the output
directory (your ``~/.rally`` is not touched), runs the task, writes
``report.html``, ``results.json`` (``rally task export --type json``) and the
devcloud's ground truth (``truth.jsonl``), prints the SLA verdict and stops
the devcloud.  The report is Rally's static HTML: it opens offline.  The exit status is the one of ``rally task start``: 0 when
the task passed, 2 when an SLA failed, 1 on errors.

Options that make the devcloud behave like some real clouds:

* ``--local-disks``: instances on local disks; nova refuses a live migration
  without block migration (``block_migration: "auto"`` means block);
* ``--nova-version none``: the environment pins no nova microversion, as
  one made from a real cloud's credentials usually does (rally then uses 2.0
  and the scenario negotiates the highest one); the default pins the
  devcloud's (2.79);
* ``--live-migrate-timeout S``: rally's ``nova_server_live_migrate_timeout``
  (the scenario aborts a migration still running then).

The process guests run Debian's static busybox, fetched once by
``tools/fetch-busybox-static`` (``apt-get download``, no install): its shell
runs ``wget`` and ``timeout`` as built-in applets, which halves the CPU a
probe costs the machine (see ``rally_metadata_plugin/devcloud/sizing.py``).
``--guest-busybox system`` runs the busybox on PATH instead, as the run does
anyway, with a warning, when the static one cannot be fetched.

``--guests vm`` runs the same task on QEMU virtual machines instead of host
processes: real guests (Debian kernel, busybox, curl, dropbear) whose live
migrations are QEMU's, with the guest clock stopped in the pause. It needs
root and ``apt-get install qemu-system-x86 iptables iproute2 curl``; the
guest image is built from Debian packages at first use (about a minute).

SIGTERM, SIGINT (Ctrl-C) or SIGHUP abort the run within seconds: the Rally
task is aborted (its finished iterations kept), the devcloud and every guest
process stopped, the partial report and results written when the task
existed, and the exit status is 128 + the signal's number (130 for Ctrl-C).
A second signal skips the waiting.  The devcloud and Rally also die with this
command if it is killed (SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bootstrap  # noqa: E402

ROOT = _bootstrap.ROOT
TASK_FILE = ROOT / "tasks" / "metadata_lm.yaml"
ARGS_FILE = ROOT / "tasks" / "args" / "devcloud.yaml"
_TASK_UUID = re.compile(r"Task\s+([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")

#: After a stop signal: how long Rally may take to abort its task, the
#: devcloud to stop, and Rally to write the partial report and results.
RALLY_ABORT_SECONDS = 20.0
DEVCLOUD_STOP_SECONDS = 20.0
REPORT_SECONDS = 30.0


def _lifetime():
    """:mod:`rally_metadata_plugin.devcloud.lifetime`, importable only once
    running in the virtualenv."""
    from rally_metadata_plugin.devcloud import lifetime
    return lifetime


class Aborted(Exception):
    """A stop signal arrived: the run ends early."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return _lifetime().signal_name(self.signum)


class StopSignals:
    """SIGTERM, SIGINT and SIGHUP, recorded rather than raised.

    The handler only notes the signal; the run looks at it wherever it
    waits (:meth:`check`), so a signal never lands between starting a child
    and knowing its pid, and every cleanup step runs.  A second signal means
    "hurry": the remaining waits are cut short.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.first_at = 0.0
        self._announced = False

    def install(self) -> None:
        _lifetime().handle_stop_signals(self._record)

    def _record(self, signum: int, frame: object) -> None:
        if not self.received:
            self.first_at = time.monotonic()
        self.received.append(signum)

    @property
    def hurry(self) -> bool:
        return len(self.received) > 1

    def check(self) -> None:
        if not self.received:
            return
        aborted = Aborted(self.received[0])
        if not self._announced:
            self._announced = True
            say(f"\n{aborted.name} received: aborting the Rally task and stopping the "
                f"devcloud (a second signal skips the waiting)", file=sys.stderr)
        raise aborted


class Reaper:
    """``tools/_reaper.py``: kills the process groups it watches once this
    process has exited, however (see there)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).with_name("_reaper.py"))],
            stdin=subprocess.PIPE, text=True, start_new_session=True)

    def _tell(self, line: str) -> None:
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass

    def watch(self, pgid: int) -> None:
        self._tell(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._tell(f"-{pgid}")

    def remove_directory(self, path: pathlib.Path) -> None:
        """Remove ``path`` (an empty control group) at the end, if still there."""
        self._tell(f"@{path}")

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait()


class Child:
    """A subprocess in a session (and process group) of its own, so that it
    can be stopped with everything it started, which dies with this process:
    a parent-death signal for the child, the ``reaper`` for what it forks
    (a SIGKILL of this command orphans nothing). Output goes to files."""

    def __init__(self, command: list[str], stdout: pathlib.Path,
                 stderr: Optional[pathlib.Path] = None, env: Optional[dict] = None,
                 death_signal: int = signal.SIGKILL, reaper: Optional[Reaper] = None) -> None:
        self.command = command
        self.stdout_path, self.stderr_path = stdout, stderr
        self.reaper = reaper
        stdout.parent.mkdir(parents=True, exist_ok=True)
        with open(stdout, "wb") as out:
            err = open(stderr, "wb") if stderr else subprocess.STDOUT
            try:
                self.process = subprocess.Popen(
                    command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    start_new_session=True,
                    preexec_fn=_lifetime().child_dies_with_parent(death_signal))
            finally:
                if stderr:
                    err.close()
        if reaper is not None:
            reaper.watch(self.process.pid)

    def _release(self) -> None:
        """Once the child is reaped and its group empty, its number may be
        reused: the reaper must forget it."""
        if self.reaper is not None and not self.group():
            self.reaper.forget(self.process.pid)
            self.reaper = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.process.poll()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def wait(self, signals: Optional[StopSignals] = None,
             timeout: Optional[float] = None) -> Optional[int]:
        """The exit status; None after ``timeout``. With ``signals``, raises
        :class:`Aborted` as soon as a stop signal has arrived."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if signals is not None:
                signals.check()
            try:
                status = self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    return None
            else:
                self._release()
                return status

    def signal_group(self, signum: int) -> None:
        """``signum`` to the child's process group (the processes it started
        that stayed in it), even after the child itself has exited."""
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def group(self) -> list[int]:
        from rally_metadata_plugin.devcloud.procfs import group_members
        return group_members(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the child."""
        self.signal_group(signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 1.0
        while self.group() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._release()


def say(*lines: str, file=None, end: str = "\n") -> None:
    """Print, unless the terminal is gone (a hang-up): nothing to say then."""
    file = file or sys.stdout
    try:
        for line in lines:
            print(line, file=file, end=end)
        file.flush()
    except OSError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_until(done: Callable[[], bool], deadline: float, signals: StopSignals) -> bool:
    """Poll ``done`` until it holds (True), the deadline or a second stop
    signal (False)."""
    while not done():
        if time.monotonic() > deadline or signals.hurry:
            return False
        time.sleep(0.05)
    return True


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="healthy",
                        help="devcloud live-migration profile: healthy, ovn-slow, flaky, broken, "
                             "error, guest-reboot, ssh-drop, network-loss, vm-dirty, vm-paused "
                             "(their VM knobs act with --guests vm), "
                             "or a path to a profile file (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="devcloud random seed")
    parser.add_argument("--out", default=str(ROOT / "out" / "devcloud"),
                        help="output directory, emptied first (default %(default)s)")
    parser.add_argument("--task", default=str(TASK_FILE), help="task file")
    parser.add_argument("--task-args-file", default=str(ARGS_FILE), help="task arguments file")
    parser.add_argument("--task-args", default=None,
                        help="extra task arguments as JSON, over the arguments file")
    parser.add_argument("--tag", default=None, help="tag for the Rally task")
    parser.add_argument("--quiet", action="store_true", help="do not echo Rally's output")
    parser.add_argument("--local-disks", action="store_true",
                        help="instances on local disks: nova refuses non-block live migration")
    parser.add_argument("--nova-version", default=None,
                        help="nova microversion the Rally environment pins, or \"none\" to pin "
                             "none (default: the devcloud's)")
    parser.add_argument("--live-migrate-timeout", type=float, default=None,
                        help="[openstack] nova_server_live_migrate_timeout for Rally, seconds")
    parser.add_argument("--guest-busybox", choices=("static", "system"), default="static",
                        help="process guests' shell: static, Debian's busybox-static, fetched "
                             "once by tools/fetch-busybox-static (default: half the CPU per "
                             "probe; the busybox on PATH when it cannot be fetched); system, "
                             "the busybox on PATH")
    parser.add_argument("--guests", choices=("process", "vm"), default="process",
                        help="process: guests are host processes (default, no root needed); "
                             "vm: QEMU virtual machines with real live migration (root, "
                             "qemu-system-x86)")
    # the static busybox the guests run, once fetched (see guest_busybox)
    parser.set_defaults(busybox=None)
    return parser.parse_args(argv)


#: Task arguments the VM guests need over the arguments file's: their SSH
#: servers listen on the usual port.
VM_TASK_ARGS = {"ssh_port": 22}


def task_arguments(options: argparse.Namespace) -> list[str]:
    """``rally task start`` options: the arguments file, then ``--task-args``
    (the guests' own, then the user's)."""
    found = ["--task-args-file", options.task_args_file]
    extra = dict(VM_TASK_ARGS) if options.guests == "vm" else {}
    if options.task_args:
        if not extra:
            return found + ["--task-args", options.task_args]
        try:
            extra.update(json.loads(options.task_args))
        except ValueError:
            raise SystemExit("--task-args: not a JSON object")
    return found + (["--task-args", json.dumps(extra)] if extra else [])


class DevCloudProcess:
    """The devcloud as a child process, stopped on exit whatever happens,
    guest processes included."""

    #: seconds the devcloud may take to start; with VM guests it may build
    #: the guest image (downloads) and boots a test guest first
    START_SECONDS = 30.0
    VM_START_SECONDS = 300.0

    def __init__(self, state_dir: pathlib.Path, profile: str, seed: int,
                 signals: StopSignals, options: tuple[str, ...] = ()) -> None:
        self.state_dir = state_dir
        self.signals = signals
        self.start_seconds = (self.VM_START_SECONDS if "--guests=vm" in options
                              else self.START_SECONDS)
        self.command = [_bootstrap.venv_bin("rally-metadata-devcloud"), "serve",
                        "--profile", profile, "--seed", str(seed),
                        "--state-dir", str(state_dir), *options]
        self.child: Child | None = None
        #: guest processes the devcloud left behind, killed after it ended
        self.orphans: list[int] = []

    def __enter__(self) -> "DevCloudProcess":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # SIGTERM if this command dies: the devcloud then stops its guests
        self.child = Child(self.command, self.state_dir / "devcloud.out",
                           death_signal=signal.SIGTERM)
        deadline = time.monotonic() + self.start_seconds
        try:
            while not (self.state_dir / "ready").exists():
                self.signals.check()
                if self.child.returncode is not None or time.monotonic() > deadline:
                    output = (self.state_dir / "devcloud.out").read_text()[-2000:]
                    raise SystemExit(f"the devcloud did not start:\n{output}")
                time.sleep(0.05)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def request_stop(self) -> None:
        """SIGTERM: the devcloud kills its guests and exits within seconds."""
        if self.child is not None and self.child.returncode is None:
            self.child.process.send_signal(signal.SIGTERM)

    def __exit__(self, *exc_info: object) -> None:
        if self.child is None:
            return
        self.request_stop()
        timeout = 2.0 if self.signals.hurry else DEVCLOUD_STOP_SECONDS
        if self.child.wait(timeout=timeout) is None:
            self.child.kill()
        # a devcloud that was killed could not stop its guests, which live in
        # sessions of their own: find them by their tag
        self.orphans = _lifetime().kill_guest_processes(self.state_dir / "guests")
        # and its CPU groups, which it could not remove either (its metadata
        # server leaves its own as it exits, now that its devcloud is gone)
        from rally_metadata_plugin.devcloud import cgroups
        cgroups.remove_stale(timeout=3.0)


class RallyCpuGroup:
    """The CPU group of ``rally task start`` and the workers it forks: on a
    real cloud Rally runs on a machine of its own; here, under overload, it
    weighs one busy task however many of its threads run, instead of taking
    the CPU the guests and the metadata service need (see
    rally_metadata_plugin.devcloud.cgroups). None where no group can be made."""

    def __init__(self, reaper: Reaper, guests: str) -> None:
        self.reaper = reaper
        self.guests = guests
        self.group = None

    def __enter__(self) -> "RallyCpuGroup":
        from rally_metadata_plugin.devcloud import cgroups
        if cgroups.groups_control_plane(self.guests):
            self.group = cgroups.cpu_group("Rally", cgroups.CONTROL_SHARES)
        if self.group is not None:
            # removed by the reaper if this process is killed
            self.reaper.remove_directory(self.group.path)
        return self

    def add(self, child: "Child") -> None:
        if self.group is not None:
            self.group.add(child.pid)

    def __exit__(self, *exc_info) -> None:
        # Rally has exited or been killed by now; its last processes leave
        # the group as they exit
        if self.group is not None:
            self.group.remove(timeout=5.0)


class IsolatedRally:
    """The rally CLI with its own HOME, configuration and sqlite database."""

    def __init__(self, workdir: pathlib.Path, devcloud_conf: pathlib.Path, quiet: bool,
                 reaper: Reaper, live_migrate_timeout: float | None = None) -> None:
        self.home = workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "rally.conf"
        self.logs = workdir / "logs"
        text = devcloud_conf.read_text()
        # Our own database, whatever the devcloud suggested.
        text = re.sub(r"(?ms)^\[database\].*?(?=^\[|\Z)", "", text)
        if live_migrate_timeout is not None:
            text = re.sub(r"(?m)^nova_server_live_migrate_timeout = .*$",
                          f"nova_server_live_migrate_timeout = {live_migrate_timeout:g}", text)
        text += f"\n[database]\nconnection = sqlite:///{workdir / 'rally.sqlite'}\n"
        self.config.write_text(text)
        self.quiet = quiet
        self.reaper = reaper

    def start(self, *args: str) -> Child:
        env = dict(os.environ, HOME=str(self.home), COLUMNS="200",
                   # the task's UUID must reach the log while the task runs
                   PYTHONUNBUFFERED="1")
        command = [_bootstrap.venv_bin("rally"), "--config-file", str(self.config), *args]
        stem = self.logs / "-".join(["rally", *args[:2]])
        return Child(command, stem.with_suffix(".out"), stem.with_suffix(".err"), env=env,
                     reaper=self.reaper)

    def run(self, *args: str, signals: StopSignals, check: bool = True,
            echo: bool = True) -> Child:
        child = self.start(*args)
        try:
            child.wait(signals)
        except Aborted:
            child.kill()
            raise
        if echo and not self.quiet:
            sys.stdout.write(child.stdout)
        if check and child.returncode != 0:
            sys.stderr.write(child.stdout[-3000:] + child.stderr[-3000:])
            raise SystemExit(f"rally {' '.join(args[:2])} failed (exit {child.returncode})")
        return child

    def abort_task(self, task: Child, signals: StopSignals,
                   stop_cloud: Callable[[], None]) -> None:
        """Stop ``rally task start`` within :data:`RALLY_ABORT_SECONDS`, keeping
        the iterations it finished.

        ``rally task abort`` is Rally's way: the engine starts no further
        iteration and marks the task aborted (it looks every 2 s). The
        iteration in flight runs in a thread of a load-generating process of
        rally's, which nothing in Rally interrupts (SIGINT neither: the
        thread outlives it); that process is killed once the task is marked
        aborted, and the devcloud is stopped (``stop_cloud``): Rally's
        context cleanup, which waits a second per resource on a live cloud,
        then fails at once, and Rally saves the finished iterations and
        exits. Before the task exists there is nothing to keep: SIGINT.
        Whatever is left of rally's process group at the deadline, or on a
        second signal, is killed.
        """
        deadline = time.monotonic() + RALLY_ABORT_SECONDS
        exited = lambda: task.returncode is not None  # noqa: E731
        uuid = task_uuid(task.stdout)
        aborter = None
        try:
            if uuid is None:
                task.process.send_signal(signal.SIGINT)
            else:
                aborter = self.start("task", "abort", uuid)
                _wait_until(lambda: aborter.returncode is not None or exited(),
                            deadline, signals)
                for pid in task.group():
                    if pid != task.pid:
                        _kill(pid)
            stop_cloud()
            if not _wait_until(exited, deadline, signals):
                # still cleaning up: interrupt that, briefly
                task.process.send_signal(signal.SIGINT)
                _wait_until(exited, time.monotonic() + 2.0, signals)
        finally:
            if aborter is not None:
                aborter.kill()
            task.kill()


def task_uuid(output: str) -> Optional[str]:
    match = _TASK_UUID.search(output)
    return match.group(1) if match else None


def sla_lines(results: dict) -> list[str]:
    """One line per SLA criterion of every workload in a JSON export."""
    lines = []
    for task in results.get("tasks", ()):
        for subtask in task.get("subtasks", ()):
            for workload in subtask.get("workloads", ()):
                name = next(iter(workload.get("scenario", {})), "?")
                for sla in workload.get("sla_results", {}).get("sla", ()):
                    status = "PASS" if sla.get("success") else "FAIL"
                    lines.append(f"SLA {status} {name} {sla.get('criterion')}: "
                                 f"{sla.get('detail')}")
    return lines


def devcloud_options(options: argparse.Namespace) -> tuple[str, ...]:
    """``rally-metadata-devcloud serve`` options from ours."""
    found = ["--local-disks"] if options.local_disks else []
    if options.nova_version not in (None, "none"):
        found += ["--nova-version", options.nova_version]
    if options.guests != "process":
        found.append(f"--guests={options.guests}")
    elif options.busybox:
        found += ["--busybox", options.busybox]
    return tuple(found)


def guest_busybox(options: argparse.Namespace) -> Optional[str]:
    """The static busybox for the process guests, fetched once into a cache
    (tools/fetch-busybox-static); None for the busybox on PATH: when asked,
    for VM guests, or when it cannot be fetched (then say so)."""
    if options.guests != "process" or options.guest_busybox != "static":
        return None
    try:
        fetched = subprocess.run([str(ROOT / "tools" / "fetch-busybox-static")],
                                 capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        fetched = subprocess.CompletedProcess([], 1, "", str(e))
    path = fetched.stdout.strip().splitlines()[-1:] if fetched.returncode == 0 else []
    if path and os.access(path[0], os.X_OK):
        return path[0]
    say("warning: Debian's busybox-static could not be fetched "
        f"({fetched.stderr.strip() or 'no message'}): the guests run the busybox on PATH, "
        "which costs about twice the CPU per probe", file=sys.stderr)
    return None


def environment_spec(cloud: DevCloudProcess, out: pathlib.Path, nova_version: str | None
                     ) -> pathlib.Path:
    """The devcloud's ``env.json``, without its nova microversion for ``none``."""
    spec_path = cloud.state_dir / "env.json"
    if nova_version != "none":
        return spec_path
    spec = json.loads(spec_path.read_text())
    api_info = spec["openstack"].get("api_info", {})
    api_info.pop("nova", None)
    if not api_info:
        spec["openstack"].pop("api_info", None)
    unpinned = out / "env.json"
    unpinned.write_text(json.dumps(spec, indent=2) + "\n")
    return unpinned


def leaked_resources(path: pathlib.Path) -> dict:
    """Non-empty entries of the devcloud's leftovers file."""
    leftovers = json.loads(path.read_text())
    found = {kind: ids for kind, ids in leftovers["resources"].items() if ids}
    for key in ("processes_of_deleted_servers", "processes_after_stop"):
        if leftovers.get(key):
            found[key] = leftovers[key]
    vm = {kind: left for kind, left in leftovers.get("vm_after_stop", {}).items() if left}
    if vm:
        found["vm_after_stop"] = vm
    return found


def write_reports(rally: IsolatedRally, uuid: str, out: pathlib.Path,
                  signals: StopSignals, aborting: bool = False) -> None:
    """``report.html`` and ``results.json``, written side by side.

    Normally a stop signal interrupts them (:class:`Aborted`) and a failure
    ends the run; ``aborting``, they get :data:`REPORT_SECONDS` (a second
    signal cuts that short) and a failure leaves the file missing.
    """
    # Static: Rally's default page loads its JavaScript from CDNs and stays
    # blank offline; this one embeds it.
    children = [rally.start("task", "report", uuid, "--html-static",
                            "--out", str(out / "report.html")),
                rally.start("task", "export", uuid, "--type", "json",
                            "--to", str(out / "results.json"))]
    try:
        if aborting:
            _wait_until(lambda: all(c.returncode is not None for c in children),
                        time.monotonic() + REPORT_SECONDS, signals)
            return
        for child in children:
            child.wait(signals)
        for child in children:
            if child.returncode != 0:
                sys.stderr.write(child.stdout[-3000:] + child.stderr[-3000:])
                raise SystemExit(f"rally {' '.join(child.command[3:5])} failed "
                                 f"(exit {child.returncode})")
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()


def stalls_warning(state_dir: pathlib.Path) -> Optional[str]:
    """A sentence on the devcloud's metadata stalls (``metadata-stalls.jsonl``
    in its state directory), or None when there were none."""
    from rally_metadata_plugin.devcloud.metadata import STALL_SECONDS, read_stalls
    stalls = read_stalls(state_dir)
    if not stalls:
        return None
    return (f"WARNING: the devcloud's metadata service stalled {len(stalls)} time(s) for "
            f"{STALL_SECONDS:g} s or more (longest {max(stalls):.1f} s, {sum(stalls):.1f} s in all): "
            f"this machine was overloaded, and guests' probes that failed then measured it, "
            f"not the cloud model; run fewer guests at once or probe less often (README, "
            f"\"Under load\")")


def finished_iterations(results: pathlib.Path) -> int:
    document = json.loads(results.read_text())
    return sum(len(workload.get("data", ()))
               for task in document.get("tasks", ())
               for subtask in task.get("subtasks", ())
               for workload in subtask.get("workloads", ()))


def aborted_ending(aborted: Aborted, signals: StopSignals, out: pathlib.Path,
                   uuid: Optional[str], started: float) -> int:
    """Say that the run was aborted, by what, and what it left: 128 + signal."""
    truth = out / "devcloud" / "truth.jsonl"
    if truth.exists():
        shutil.copy(truth, out / "truth.jsonl")
    lines = [""]
    report, results = out / "report.html", out / "results.json"
    if uuid is None:
        lines.append("no report: the Rally task had not been created yet")
    else:
        (out / "task_uuid").write_text(uuid + "\n")
        if report.exists():
            lines.append(f"HTML report (partial): {report}")
        if results.exists():
            try:
                finished = str(finished_iterations(results))
            except (ValueError, OSError):
                finished = "?"
            lines.append(f"results (partial, {finished} iteration(s) finished): {results}")
        if signals.hurry:
            lines.append("no partial report: a second signal asked not to wait for it")
        elif not (report.exists() and results.exists()):
            lines.append("the partial report could not be written")
    task = f"Rally task {uuid}" if uuid else "the run"
    lines.append(f"aborted by {aborted.name}: {task} stopped, the devcloud and its guests "
                 f"too, {time.monotonic() - signals.first_at:.1f} s after the signal "
                 f"({time.monotonic() - started:.1f} s in all)")
    say(*lines)
    return 128 + aborted.signum


def effective_task_args(options: argparse.Namespace) -> dict:
    """The task arguments as Rally will see them: the file, then --task-args
    (JSON or YAML) over it."""
    import yaml
    args = {}
    try:
        args.update(yaml.safe_load(pathlib.Path(options.task_args_file).read_text()) or {})
        if options.task_args:
            args.update(yaml.safe_load(options.task_args) or {})
    except (OSError, yaml.YAMLError, TypeError, ValueError):
        return {}               # rally will say what is wrong with them
    return args


def guest_cpu_budget(options: argparse.Namespace):
    """The guests' probe CPU budget of the run (a sizing.GuestCpuBudget), from
    the task as rendered with its arguments (its template holds the defaults);
    None when the task cannot be read (rally task validate says why)."""
    import jinja2
    import yaml
    from rally_metadata_plugin.devcloud import sizing
    try:
        text = jinja2.Environment().from_string(
            pathlib.Path(options.task).read_text()).render(**effective_task_args(options))
        workload = yaml.safe_load(text)["subtasks"][0]["workloads"][0]
        (args,) = workload["scenario"].values()
        (runner,) = workload["runner"].values()
        return sizing.guest_cpu_budget(int(runner.get("concurrency", 1)),
                                       float(args["probe_interval"]),
                                       float(args["fast_probe_interval"]),
                                       os.cpu_count() or 1,
                                       tool=("wget, static busybox"
                                             if options.busybox else "wget"))
    except (OSError, jinja2.TemplateError, yaml.YAMLError, LookupError, TypeError,
            ValueError, AttributeError, ZeroDivisionError):
        return None


def warn_if_guests_overload(options: argparse.Namespace) -> None:
    """Say so before the run when the guests' probes need more CPU than this
    machine has (see rally_metadata_plugin.devcloud.sizing)."""
    budget = guest_cpu_budget(options)
    if budget is not None and not budget.fits:
        say(f"warning: {budget.advice()}", file=sys.stderr)


def run(options: argparse.Namespace, signals: StopSignals, reaper: Reaper) -> int:
    options.busybox = guest_busybox(options)
    warn_if_guests_overload(options)
    out = pathlib.Path(options.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()
    task: Child | None = None
    try:
        with DevCloudProcess(out / "devcloud", options.profile, options.seed, signals,
                             devcloud_options(options)) as cloud, \
                RallyCpuGroup(reaper, options.guests) as client_cpu:
            rally = IsolatedRally(out, cloud.state_dir / "rally.conf", options.quiet, reaper,
                                  options.live_migrate_timeout)
            try:
                rally.run("db", "create", signals=signals, echo=False)
                rally.run("env", "create", "--name", "devcloud", "--spec",
                          str(environment_spec(cloud, out, options.nova_version)),
                          signals=signals, echo=False)
                # No "rally env check": "rally task start" checks the cloud's health itself.
                task_args = task_arguments(options)
                tags = ["--tag", options.tag] if options.tag else []
                task = rally.start("task", "start", options.task, *task_args, *tags)
                client_cpu.add(task)
                try:
                    task.wait(signals)
                except Aborted:
                    rally.abort_task(task, signals, cloud.request_stop)
                    raise
                finally:
                    if not options.quiet:
                        say(task.stdout, end="")
                uuid = task_uuid(task.stdout)
                if uuid is None:
                    sys.stderr.write(task.stdout[-3000:] + task.stderr[-3000:])
                    print(f"rally task start failed before the task was created (exit "
                          f"{task.returncode})", file=sys.stderr)
                    return task.returncode or 1
                write_reports(rally, uuid, out, signals)
            except Aborted:
                # the devcloud stops while Rally writes what it has
                cloud.request_stop()
                uuid = task_uuid(task.stdout) if task is not None else None
                if uuid is not None and not signals.hurry:
                    write_reports(rally, uuid, out, signals, aborting=True)
                raise
    except Aborted as aborted:
        return aborted_ending(aborted, signals, out,
                              task_uuid(task.stdout) if task is not None else None, started)
    # The devcloud writes its ground truth and leftovers when it stops.
    shutil.copy(cloud.state_dir / "truth.jsonl", out / "truth.jsonl")
    (out / "task_uuid").write_text(uuid + "\n")
    verdict = {0: "PASSED", 2: "FAILED (SLA)"}.get(task.returncode, f"ERROR (exit {task.returncode})")
    print()
    for line in sla_lines(json.loads((out / "results.json").read_text())):
        print(line)
    leftovers = cloud.state_dir / "leftovers.json"
    if leftovers.exists():
        leaked = leaked_resources(leftovers)
        if leaked:
            print(f"WARNING: left behind in the devcloud: {leaked}")
    else:
        print(f"WARNING: the devcloud did not stop cleanly (exit status "
              f"{cloud.child.returncode}): no leftovers report")
    if cloud.orphans:
        print(f"WARNING: killed {len(cloud.orphans)} guest process(es) the devcloud left behind")
    stalled = stalls_warning(cloud.state_dir)
    if stalled:
        print(stalled)
    print(f"task {uuid}: {verdict} in {time.monotonic() - started:.1f} s")
    print(f"HTML report: {out / 'report.html'}")
    print(f"results: {out / 'results.json'}; devcloud ground truth: {out / 'truth.jsonl'}")
    return task.returncode


def main() -> int:
    _bootstrap.reexec_in_venv(os.path.abspath(__file__))
    signals = StopSignals()
    signals.install()
    reaper = Reaper()
    try:
        status = run(_parse_args(sys.argv[1:]), signals, reaper)
    finally:
        reaper.close()
    try:
        sys.stdout.flush()
    except OSError:     # the terminal is gone: do not fail flushing at exit
        sys.stdout = open(os.devnull, "w")
    return status


if __name__ == "__main__":
    sys.exit(main())
