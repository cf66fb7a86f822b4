#!/usr/bin/env python3
"""How many guests the devcloud carries on this machine: a benchmark.

Not part of the test run. Usage::

    .venv/bin/python tools/bench_scale.py                 # the published table
    .venv/bin/python tools/bench_scale.py --runs default:50 1s:200

Each run is the README's main command (``tools/devcloud_task.py``) with
``times = concurrency = N`` (N guests at once, each live-migrated
``--migrations`` times), at one of two probe rates:

* ``default``: the task's defaults, a probe every 0.2 s and every 0.05 s
  while a migration is under way (5 and 20 probes per second per guest);
* ``1s``: every probe once a second: the guest meter's, also during
  migrations, and the network meter's (``network_probe_interval: 1.0``;
  its default is a connect every 0.1 s, 2,000 a second at 200 guests).

Printed side by side per run: exit status, iterations with errors, SLA
verdict, migrations measured, wall time, and CPU seconds of the devcloud
process (the simulated control plane: APIs, SSH, migrations), of its
metadata server process, of the guests (their shells and every probe), and
of Rally (the controller driving the task), with the devcloud's and Rally's
per guest. CPU figures
come from sampling ``/proc`` every 0.5 s (the last half second before a
process exits is missed) and the guests' from their shells' own and reaped
children's times; the total of everything started is
``getrusage(RUSAGE_CHILDREN)`` once the run is over. Last, how many times
the devcloud's metadata service answered nothing for half a second or more
(its ``metadata-stalls.jsonl``), and the longest: a guest's probe that
failed then measured this machine's overload, not the cloud model.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import threading
import time

from rally_metadata_plugin.devcloud import lifetime, procfs
from rally_metadata_plugin.devcloud.metadata import read_stalls

ROOT = pathlib.Path(__file__).resolve().parent.parent
TASK = ROOT / "tools" / "devcloud_task.py"

#: probe-rate name -> task arguments
RATES = {
    "default": {},
    "1s": {"probe_interval": 1.0, "fast_probe_interval": 1.0,
           "network_probe_interval": 1.0},
}
#: what the README publishes: (rate, guests at once)
PUBLISHED = ["default:10", "default:25", "default:50",
             "1s:50", "1s:100", "1s:200"]


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """CPU seconds of ``pid`` (and of the children it reaped), or None."""
    stat = procfs.proc_stat(pid)
    if stat is None:
        return None
    return stat.cpu_seconds + (stat.children_cpu_seconds if children else 0.0)


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in procfs.pids():
        stat = procfs.proc_stat(pid)
        if stat is not None:
            children.setdefault(stat.ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class CpuSampler(threading.Thread):
    """Samples the CPU time of the run's processes by kind until stopped.

    The devcloud and Rally are found in the run's process tree; guest
    processes by the devcloud's own tag (a detached meter loop is no longer
    anybody's child), each counted with the children it has reaped. A probe
    sampled while alive and again in its parent's reaped time is counted
    twice; probes live milliseconds, so that error is small.
    """

    def __init__(self, root: int, guests_root: pathlib.Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.guests_root = guests_root
        self.last: dict[int, tuple[str, float]] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.sample()

    def sample(self) -> None:
        seen = []
        for pid in descendants(self.root):
            argv = procfs.proc_argv(pid) or []
            if any("devcloud.cli" in a or a.endswith("rally-metadata-devcloud")
                   for a in argv[:3]):
                seen.append((pid, "devcloud", cpu_seconds(pid)))
            elif any(a.endswith("devcloud.metadata_server") for a in argv[:3]):
                seen.append((pid, "metadata", cpu_seconds(pid)))
            elif any(os.path.basename(a) == "rally" for a in argv[:2]):
                seen.append((pid, "rally", cpu_seconds(pid)))
        for pids in lifetime.guest_processes(self.guests_root).values():
            seen += [(pid, "guest", cpu_seconds(pid, children=True))
                     for pid in pids]
        for pid, kind, seconds in seen:
            if seconds is not None:
                self.last[pid] = (kind, seconds)

    def totals(self) -> dict[str, float]:
        totals = {"devcloud": 0.0, "metadata": 0.0, "guest": 0.0, "rally": 0.0}
        for kind, seconds in self.last.values():
            totals[kind] += seconds
        return totals


def outcome(out: pathlib.Path) -> dict:
    """Iterations, errors, SLA and migrations from the run's results.json,
    and the devcloud's metadata stalls."""
    stalls = read_stalls(out / "devcloud")
    found = {"iterations": 0, "errors": 0, "sla": "?", "migrations": 0,
             "stalls": len(stalls), "longest_stall": max(stalls, default=0.0)}
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return found
    for task in results.get("tasks", ()):
        for subtask in task.get("subtasks", ()):
            for workload in subtask.get("workloads", ()):
                found["sla"] = "PASS" if workload.get("pass_sla") else "FAIL"
                for iteration in workload.get("data", ()):
                    found["iterations"] += 1
                    found["errors"] += bool(iteration.get("error"))
    try:
        found["migrations"] = sum(
            1 for line in (out / "truth.jsonl").read_text().splitlines()
            if json.loads(line).get("status") == "completed")
    except (OSError, ValueError):
        pass
    return found


def run(rate: str, guests: int, migrations: int, out_root: pathlib.Path,
        timeout: float) -> dict:
    out = out_root / f"{rate}-{guests}"
    args = {"times": guests, "concurrency": guests, "migrations": migrations,
            "ssh_timeout": 300.0, "recovery_timeout": 60.0, **RATES[rate]}
    command = [sys.executable, str(TASK), "--quiet", "--out", str(out),
               "--task-args", json.dumps(args)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sampler = CpuSampler(proc.pid, out / "devcloud" / "guests")
    sampler.start()
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()       # the main command aborts the task cleanly
        status = proc.wait()
        status = f"timeout ({status})"
    wall = time.monotonic() - started
    sampler.stopped.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    cpu = sampler.totals()
    return {"rate": rate, "guests": guests, "status": status, "wall": wall,
            "cpu": cpu, "cpu_total": total, **outcome(out)}


def table(rows: list[dict]) -> str:
    header = (f"{'probes':>8} {'guests':>6} {'exit':>5} {'errors':>7} {'SLA':>4} "
              f"{'migr.':>6} {'wall s':>7} {'devcloud s':>10} {'/guest':>7} "
              f"{'metadata s':>10} {'guests s':>9} {'rally s':>8} {'/guest':>7} {'total s':>8} "
              f"{'stalls':>6} {'longest':>7}")
    lines = [header, "-" * len(header)]
    for r in rows:
        n = r["guests"]
        cpu = r["cpu"]
        lines.append(
            f"{r['rate']:>8} {n:>6} {str(r['status']):>5} "
            f"{r['errors']:>3}/{r['iterations']:<3} {r['sla']:>4} "
            f"{r['migrations']:>6} {r['wall']:>7.1f} {cpu['devcloud']:>10.1f} "
            f"{cpu['devcloud'] / n:>7.2f} {cpu['metadata']:>10.1f} {cpu['guest']:>9.1f} "
            f"{cpu['rally']:>8.1f} {cpu['rally'] / n:>7.2f} {r['cpu_total']:>8.1f} "
            f"{r['stalls']:>6} {r['longest_stall']:>7.1f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=PUBLISHED,
                        help="RATE:GUESTS pairs, RATE in %s" % ", ".join(RATES))
    parser.add_argument("--migrations", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path,
                        default=ROOT / "out" / "bench-scale")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds before a run is aborted (SIGTERM)")
    options = parser.parse_args()
    rows = []
    for spec in options.runs:
        rate, _, guests = spec.partition(":")
        if rate not in RATES or not guests.isdigit():
            parser.error(f"bad run {spec!r}: want RATE:GUESTS")
        row = run(rate, int(guests), options.migrations, options.out,
                  options.timeout)
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
    print()
    print(f"{os.cpu_count()} CPUs; {options.migrations} migrations per guest")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
