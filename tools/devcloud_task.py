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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bootstrap  # noqa: E402

ROOT = _bootstrap.ROOT
TASK_FILE = ROOT / "tasks" / "metadata_lm.yaml"
ARGS_FILE = ROOT / "tasks" / "args" / "devcloud.yaml"
_TASK_UUID = re.compile(r"Task\s+([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="healthy",
                        help="devcloud live-migration profile: healthy, ovn-slow, flaky, broken, "
                             "error, guest-reboot, ssh-drop, "
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
    return parser.parse_args(argv)


class DevCloudProcess:
    """The devcloud as a child process, stopped on exit whatever happens."""

    def __init__(self, state_dir: pathlib.Path, profile: str, seed: int,
                 options: tuple[str, ...] = ()) -> None:
        self.state_dir = state_dir
        self.command = [_bootstrap.venv_bin("rally-metadata-devcloud"), "serve",
                        "--profile", profile, "--seed", str(seed),
                        "--state-dir", str(state_dir), *options]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "DevCloudProcess":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "devcloud.out", "w")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 30
        while not (self.state_dir / "ready").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                output = (self.state_dir / "devcloud.out").read_text()[-2000:]
                raise SystemExit(f"the devcloud did not start:\n{output}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class IsolatedRally:
    """The rally CLI with its own HOME, configuration and sqlite database."""

    def __init__(self, workdir: pathlib.Path, devcloud_conf: pathlib.Path, quiet: bool,
                 live_migrate_timeout: float | None = None) -> None:
        self.home = workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "rally.conf"
        text = devcloud_conf.read_text()
        # Our own database, whatever the devcloud suggested.
        text = re.sub(r"(?ms)^\[database\].*?(?=^\[|\Z)", "", text)
        if live_migrate_timeout is not None:
            text = re.sub(r"(?m)^nova_server_live_migrate_timeout = .*$",
                          f"nova_server_live_migrate_timeout = {live_migrate_timeout:g}", text)
        text += f"\n[database]\nconnection = sqlite:///{workdir / 'rally.sqlite'}\n"
        self.config.write_text(text)
        self.quiet = quiet

    def run(self, *args: str, check: bool = True, echo: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, HOME=str(self.home), COLUMNS="200")
        command = [_bootstrap.venv_bin("rally"), "--config-file", str(self.config), *args]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if echo and not self.quiet:
            sys.stdout.write(result.stdout)
        if check and result.returncode != 0:
            sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
            raise SystemExit(f"rally {' '.join(args[:2])} failed (exit {result.returncode})")
        return result


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
    return tuple(found)


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
    return found


def run(options: argparse.Namespace) -> int:
    out = pathlib.Path(options.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()
    with DevCloudProcess(out / "devcloud", options.profile, options.seed,
                         devcloud_options(options)) as cloud:
        rally = IsolatedRally(out, cloud.state_dir / "rally.conf", options.quiet,
                              options.live_migrate_timeout)
        rally.run("db", "create", echo=False)
        rally.run("env", "create", "--name", "devcloud", "--spec",
                  str(environment_spec(cloud, out, options.nova_version)), echo=False)
        # No "rally env check": "rally task start" checks the cloud's health itself.
        task_args = ["--task-args-file", options.task_args_file]
        if options.task_args:
            task_args += ["--task-args", options.task_args]
        tags = ["--tag", options.tag] if options.tag else []
        task = rally.run("task", "start", options.task, *task_args, *tags, check=False)
        match = _TASK_UUID.search(task.stdout)
        if not match:
            sys.stderr.write(task.stdout[-3000:] + task.stderr[-3000:])
            print(f"rally task start failed before the task was created (exit "
                  f"{task.returncode})", file=sys.stderr)
            return task.returncode or 1
        uuid = match.group(1)
        report = out / "report.html"
        # Static: Rally's default page loads its JavaScript from CDNs and stays
        # blank offline; this one embeds it.
        rally.run("task", "report", uuid, "--html-static", "--out", str(report), echo=False)
        rally.run("task", "export", uuid, "--type", "json", "--to", str(out / "results.json"),
                  echo=False)
    # The devcloud writes its ground truth and leftovers when it stops.
    shutil.copy(cloud.state_dir / "truth.jsonl", out / "truth.jsonl")
    (out / "task_uuid").write_text(uuid + "\n")
    verdict = {0: "PASSED", 2: "FAILED (SLA)"}.get(task.returncode, f"ERROR (exit {task.returncode})")
    print()
    for line in sla_lines(json.loads((out / "results.json").read_text())):
        print(line)
    leaked = leaked_resources(cloud.state_dir / "leftovers.json")
    if leaked:
        print(f"WARNING: left behind in the devcloud: {leaked}")
    print(f"task {uuid}: {verdict} in {time.monotonic() - started:.1f} s")
    print(f"HTML report: {report}")
    print(f"results: {out / 'results.json'}; devcloud ground truth: {out / 'truth.jsonl'}")
    return task.returncode


def main() -> int:
    _bootstrap.reexec_in_venv(os.path.abspath(__file__))
    return run(_parse_args(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
