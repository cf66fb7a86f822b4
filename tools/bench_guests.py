#!/usr/bin/env python3
"""Process guests next to VM guests: the same task, profile and seed.

    python3 tools/bench_guests.py [--profile healthy] [--seed 1] [--four-at-once]

Runs the README's main command (``tools/devcloud_task.py``) once with
``--guests process`` and once with ``--guests vm`` and prints, side by side:

* |measured - truth|: each migration's measured metadata downtime against
  what its guest could observe of the true outage
  (:func:`rally_metadata_plugin.devcloud.accuracy.observable_outage`: a
  range for process guests, whose clock runs on while frozen), mean and
  max; and against the outage itself (its shortest observable length);
* |pause estimate - QEMU downtime| (VM guests) and |pause estimate - the
  guest's real stop| (both: SIGSTOP..SIGCONT for processes, QEMU's STOP..
  RESUME for VMs), mean and max;
* boot: Rally's ``nova.boot_server`` + ``vm.wait_for_ssh`` per guest, and
  for VM guests QEMU's start to the guest's ready mark;
* the wall time of the main command.

``--four-at-once`` adds a VM run of 4 concurrent iterations (4 VMs at once).
A benchmark, not a test: it prints figures and asserts nothing. VM guests
need root and qemu-system-x86 (see the README). Output goes to
``out/bench-guests/``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bootstrap  # noqa: E402

ROOT = _bootstrap.ROOT


def run_task(out: pathlib.Path, guests: str, profile: str, seed: int,
             task_args: str | None) -> tuple[int, float]:
    command = [sys.executable, str(ROOT / "tools" / "devcloud_task.py"), "--quiet",
               "--out", str(out), "--guests", guests, "--profile", profile,
               "--seed", str(seed)]
    if task_args:
        command += ["--task-args", task_args]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode not in (0, 2):
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
    return result.returncode, wall


def atomic_durations(results: dict, names: set[str]) -> list[float]:
    """Per iteration: the summed durations of the named atomic actions."""
    found = []
    for task in results["tasks"]:
        for subtask in task["subtasks"]:
            for workload in subtask["workloads"]:
                for iteration in workload["data"]:
                    total = sum(a["finished_at"] - a["started_at"]
                                for a in iteration["atomic_actions"]
                                if a["name"] in names and a.get("finished_at"))
                    found.append(total)
    return found


def figures(out: pathlib.Path, status: int, wall: float) -> dict:
    from rally_metadata_plugin.devcloud import accuracy
    results = json.loads((out / "results.json").read_text())
    rows = accuracy.compare(results, accuracy.read_truth(out / "truth.jsonl"))
    boots_file = out / "devcloud" / "vm-boots.jsonl"
    qemu_boots = ([json.loads(line)["boot_seconds"]
                   for line in boots_file.read_text().splitlines() if line.strip()]
                  if boots_file.exists() else [])
    return {
        "status": status, "wall": wall, "migrations": len(rows),
        "downtime": accuracy.summary(r.downtime_error for r in rows),
        "downtime_vs_outage": accuracy.summary(abs(r.measured - r.true_shortest)
                                               for r in rows),
        "pause_bound": accuracy.summary(r.pause_bound for r in rows),
        "pause_vs_qemu": accuracy.summary(r.pause_error_vs_downtime for r in rows),
        "pause_vs_stop": accuracy.summary(r.pause_error for r in rows),
        "boot_to_ssh": accuracy.summary(atomic_durations(
            results, {"nova.boot_server", "vm.wait_for_ssh"})),
        "qemu_boot": accuracy.summary(qemu_boots),
    }


def cell(pair) -> str:
    return "n/a" if pair is None else f"{pair[0]:.3f} / {pair[1]:.3f}"


def main() -> int:
    _bootstrap.reexec_in_venv(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="healthy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--task-args", default=None,
                        help="extra task arguments (JSON) for both runs")
    parser.add_argument("--four-at-once", action="store_true",
                        help="also run 4 concurrent iterations on VM guests")
    parser.add_argument("--out", default=str(ROOT / "out" / "bench-guests"))
    options = parser.parse_args()
    base = pathlib.Path(options.out)
    runs = [("process", "process", options.task_args),
            ("vm", "vm", options.task_args)]
    if options.four_at_once:
        runs.append(("vm, 4 at once", "vm",
                     '{"times": 4, "concurrency": 4, "migrations": 2}'))
    table = {}
    for label, guests, task_args in runs:
        out = base / label.replace(", ", "-").replace(" ", "-")
        print(f"running the main command with --guests {guests} ({label}) ...",
              flush=True)
        status, wall = run_task(out, guests, options.profile, options.seed, task_args)
        table[label] = figures(out, status, wall)
    rows = [("exit status", lambda f: str(f["status"])),
            ("migrations measured", lambda f: str(f["migrations"])),
            ("|measured - truth| mean / max (s), 0 inside the true range",
             lambda f: cell(f["downtime"])),
            ("|measured - true outage| mean / max (s)", lambda f: cell(f["downtime_vs_outage"])),
            ("|pause est. - QEMU downtime| mean / max (s)", lambda f: cell(f["pause_vs_qemu"])),
            ("|pause est. - guest stop| mean / max (s)", lambda f: cell(f["pause_vs_stop"])),
            ("pause estimate's own error bound mean / max (s)", lambda f: cell(f["pause_bound"])),
            ("boot to SSH per guest, Rally (s)", lambda f: cell(f["boot_to_ssh"])),
            ("QEMU start to guest ready (s)", lambda f: cell(f["qemu_boot"])),
            ("wall time of the main command (s)", lambda f: f"{f['wall']:.1f}")]
    labels = list(table)
    print(f"\nprofile {options.profile}, seed {options.seed}\n")
    print("| | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for title, render in rows:
        print(f"| {title} | " + " | ".join(render(table[l]) for l in labels) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
