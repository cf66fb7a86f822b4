#!/usr/bin/env python3
"""Benchmark the guest meter against a naive one-probe-at-a-time loop.

Not part of the test run.  Usage (as root for the ``drop`` schedules)::

    /work/venv/bin/python tools/bench_meter.py [--quick]

For each injected outage schedule, three meters run side by side in one
fake CirrOS guest (busybox sh and applets, see rally_metadata_plugin/testing/)
against the same fake metadata service:

* ours, busybox wget (the ``auto`` tool), probe interval 0.2 s;
* ours, curl, probe interval 0.2 s;
* a naive loop in the style described in docs/measurement.md: an un-timed
  ``curl URL | grep -q "$(hostname)"``, the time since the previous probe
  from /proc/uptime logged as PASSED or FAILED, then ``sleep 0.2``; its
  downtime is the sum of the FAILED intervals.  (Written here from that
  description; none of Tempest's text is used.)

Then the CPU time per probe of each guest loop against a healthy service
answering the hostname, and of ours with wget against one answering a
meta_data.json-sized document (what the devcloud task probes), from
``getrusage(RUSAGE_CHILDREN)`` deltas.  Everything started is stopped
and every namespace deleted, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.core.probe_script import METADATA_HOST
from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.metadata import meta_data_json
from rally_metadata_plugin.devcloud.model.outages import InstanceIdentity
from rally_metadata_plugin.testing import guest as sandbox
from rally_metadata_plugin.testing.guest import REAPER, Guest, wait_group_gone
from rally_metadata_plugin.testing.metadata_server import MetadataServer
from rally_metadata_plugin.testing.netns import NetNS, netns_unavailable

INTERVAL = 0.2

NAIVE_LOOP = r"""#!/bin/sh
# Naive metadata prober: one un-timed request at a time.
url=$1
log=$2
prev=$(cut -d ' ' -f 1 /proc/uptime)
while true; do
    if curl -s "$url" | grep -q "$(hostname)"; then state=PASSED; else state=FAILED; fi
    cur=$(cut -d ' ' -f 1 /proc/uptime)
    echo "$state $(echo "$cur $prev" | awk '{ print $1 - $2 }')" >>"$log"
    prev=$cur
    sleep 0.2
done
"""

#: (name, kind, outage seconds, in progress when the log is read)
FULL = [
    ("refused 0.5s", FaultKind.REFUSED, 0.5, False),
    ("refused 1s", FaultKind.REFUSED, 1.0, False),
    ("refused 2s", FaultKind.REFUSED, 2.0, False),
    ("refused 4s", FaultKind.REFUSED, 4.0, False),
    ("drop 0.5s", FaultKind.DROP, 0.5, False),
    ("drop 2s", FaultKind.DROP, 2.0, False),
    ("drop 4s", FaultKind.DROP, 4.0, False),
    ("hang 1s", FaultKind.HANG, 1.0, False),
    ("hang 4s", FaultKind.HANG, 4.0, False),
    ("http_500 1s", FaultKind.HTTP_500, 1.0, False),
    ("wrong_instance 1s", FaultKind.WRONG_INSTANCE, 1.0, False),
    ("refused, read at 2s", FaultKind.REFUSED, 2.0, True),
    ("drop, read at 2s", FaultKind.DROP, 2.0, True),
]
QUICK = [
    ("refused 1s", FaultKind.REFUSED, 1.0, False),
    ("drop 2s", FaultKind.DROP, 2.0, False),
    ("hang 1s", FaultKind.HANG, 1.0, False),
    ("http_500 1s", FaultKind.HTTP_500, 1.0, False),
    ("drop, read at 2s", FaultKind.DROP, 2.0, True),
]


def naive_downtime(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "FAILED":
            with contextlib.suppress(ValueError):
                total += float(parts[1])
    return total


def naive_probes(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith(("PASSED", "FAILED")))


class NaiveLoop:
    """The naive loop, run with the guest's sh in its own process group."""

    def __init__(self, guest: Guest, url: str):
        self.guest = guest
        self.script = guest.root / "naive.sh"
        self.script.write_text(NAIVE_LOOP)
        self.log = guest.root / "naive.log"
        self.url = url
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.guest.argv(str(self.script), self.url, str(self.log)),
                                     env=self.guest.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        REAPER.watch(self.proc.pid)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            wait_group_gone(self.proc.pid, 2.0)
            REAPER.reap()


def wait_naive_passes(loop: NaiveLoop, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = loop.text().splitlines()
        if len(lines) >= count and all(l.startswith("PASSED") for l in lines[-count:]):
            return
        time.sleep(0.05)
    raise TimeoutError("naive loop: no healthy baseline")


def run_schedule(tmp: pathlib.Path, name: str, kind: FaultKind, duration: float,
                 in_progress: bool, use_netns: bool) -> dict:
    hostname = socket.gethostname()
    netns = NetNS("rmpb") if use_netns else None
    guests, loop, server = [], None, None
    try:
        if netns:
            netns.create()
            server = MetadataServer(hostname + "\n", host=METADATA_HOST, port=80, netns=netns)
        else:
            server = MetadataServer(hostname + "\n")
        server.start()
        run_dir = tmp / name.replace(" ", "_").replace(",", "")
        ours = {}
        for label, tools, tool in (("wget", ("wget", "curl"), "auto"),
                                   ("curl", ("curl",), "curl")):
            guest = Guest(run_dir / label, "busybox", tools, netns)
            guests.append(guest)
            settings = guest.settings(url=server.url(), interval=INTERVAL, tool=tool)
            guest.start(settings)
            ours[label] = (guest, settings)
        naive_guest = Guest(run_dir / "naive", "busybox", ("curl",), netns)
        guests.append(naive_guest)
        loop = NaiveLoop(naive_guest, server.url())
        loop.start()
        for guest, settings in ours.values():
            guest.wait_for_good_probes(settings, count=5)
        wait_naive_passes(loop, 5)
        time.sleep(0.5)

        row = {"name": name, "kind": kind}
        start = server.set_fault(kind)
        if in_progress:
            time.sleep(duration)
            results = {}
            for label, (guest, settings) in ours.items():
                until, text = guest.read_log(settings)
                results[label] = analysis.analyze(analysis.parse_log(text), until=until)
            naive_text = loop.text()
            truth = boottime.now() - start.time
            server.clear_fault(kind)
        else:
            time.sleep(max(0.0, start.time + duration - boottime.now()))
            end = server.clear_fault(kind)
            truth = end.time - start.time
            # Recovery: the naive loop may need a while (TCP SYN retries).
            time.sleep(1.5)
            for guest, settings in ours.values():
                guest.wait_for_good_probes(settings, count=3)
            with contextlib.suppress(TimeoutError):
                wait_naive_passes(loop, 2, timeout=10)
            results = {}
            for label, (guest, settings) in ours.items():
                results[label] = analysis.analyze(analysis.parse_log(guest.stop(settings)))
            naive_text = loop.text()
        row["truth"] = truth
        for label, result in results.items():
            error = sum((o.error for o in result.outages), 0.0)
            row[label] = (result.downtime, error, len(result.outages),
                          [o.ongoing for o in result.outages])
        row["naive"] = naive_downtime(naive_text)
        return row
    finally:
        if loop:
            loop.stop()
        for guest in guests:
            guest.close()
        if server:
            server.close()
        if netns:
            netns.close()


def _loop_cpu(tmp: pathlib.Path, server, label: str, tools, tool, seconds: float,
              shell: str = "busybox"):
    """(CPU seconds, probes) of one guest loop run for ``seconds`` in ``shell``."""
    name = f"cpu-{seconds:g}-" + label.replace(" ", "_").replace("|", "_").replace(",", "")
    with Guest(tmp / name, shell, tools) as guest:
        REAPER.reap()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        if tool is None:
            loop = NaiveLoop(guest, server.url())
            loop.start()
            time.sleep(seconds)
            loop.stop()
            probes = naive_probes(loop.text())
        else:
            settings = guest.settings(url=server.url(), interval=INTERVAL, tool=tool,
                                      duration=seconds)
            guest.install(settings)
            proc = subprocess.Popen(guest.argv(settings.script_path),
                                    env=guest.env, start_new_session=True,
                                    stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            REAPER.watch(proc.pid)
            proc.wait(seconds + 10)
            time.sleep(1.2)  # busybox timeout's watchdogs (1 s) are reaped too
            REAPER.reap()
            log = analysis.parse_log(guest.log_text(settings))
            probes = len(log.records)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), probes


def cpu_per_probe(tmp: pathlib.Path, seconds: float) -> dict:
    """Steady-state CPU per probe of each guest loop (busybox sh), healthy service.

    Each loop runs twice, for ``seconds / 4`` and for ``seconds``; the
    difference divided by the difference in probes is the cost of one more
    probe, free of one-time start-up work (tool detection, for ours), which
    is reported apart.  Returns ``{label: (per_probe, startup, probes)}``.
    """
    hostname = socket.gethostname()
    figures = {}
    bodies = {"hostname": hostname + "\n", "meta_data.json": _meta_data_json(hostname)}
    rows = [("ours wget", "hostname", ("wget", "curl"), "auto", "busybox"),
            ("ours curl", "hostname", ("curl",), "curl", "busybox"),
            ("naive curl|grep", "hostname", ("curl",), None, "busybox"),
            ("ours wget, json", "meta_data.json", ("wget", "curl"), "auto", "busybox")]
    if sandbox.static_busybox():
        # the devcloud's process guests run it when it was fetched (see
        # rally_metadata_plugin.devcloud.sizing)
        rows.append(("ours wget, json, static", "meta_data.json", ("wget", "curl"), "auto",
                     "busybox-static"))
    for label, body, tools, tool, shell in rows:
        with MetadataServer(bodies[body]) as server:
            short_cpu, short_probes = _loop_cpu(tmp, server, label, tools, tool, seconds / 4,
                                                shell)
            long_cpu, long_probes = _loop_cpu(tmp, server, label, tools, tool, seconds, shell)
        per_probe = (long_cpu - short_cpu) / max(1, long_probes - short_probes)
        startup = max(0.0, long_cpu - per_probe * long_probes)
        figures[label] = (per_probe, startup, long_probes)
    return figures


def _meta_data_json(hostname: str) -> str:
    """A body like the one the devcloud task probes (the OpenStack
    meta_data.json with an SSH public key, about 1.2 KB), naming this host:
    what a probe reads and checks grows with it."""
    key = "ssh-rsa " + "A" * 372 + " rally@devcloud"
    identity = InstanceIdentity(
        uuid=str(uuid.uuid4()), name=hostname, hostname=hostname,
        project_id=uuid.uuid4().hex, launch_index=0, availability_zone="nova",
        public_keys={"rally": key}, fixed_ips=("10.0.0.5",),
        floating_ips=("172.24.4.5",), ec2_id="i-00000001")
    return json.dumps(meta_data_json(identity))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer schedules and shorter CPU runs")
    args = parser.parse_args(argv)
    missing = [name for name, path in (("busybox", sandbox.BUSYBOX),
                                       ("curl", sandbox.CURL)) if path is None]
    if missing:
        print(f"cannot run: {', '.join(missing)} not installed", file=sys.stderr)
        return 2
    no_netns = netns_unavailable()
    schedules = QUICK if args.quick else FULL
    cpu_seconds = 8.0 if args.quick else 20.0
    rows, skipped = [], []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-meter-") as tmp:
        tmp_path = pathlib.Path(tmp)
        for name, kind, duration, in_progress in schedules:
            if kind.needs_netns and no_netns:
                skipped.append(f"{name}: {no_netns}")
                continue
            rows.append(run_schedule(tmp_path, name, kind, duration, in_progress,
                                     no_netns is None))
            print(f"  ran {name}", file=sys.stderr, flush=True)
        cpu = cpu_per_probe(tmp_path, cpu_seconds)
    report(rows, skipped, cpu, cpu_seconds, time.monotonic() - started, args.quick)
    return 0


def report(rows, skipped, cpu, cpu_seconds, elapsed, quick) -> None:
    header = (f"{'schedule':22s} {'true':>6s} | {'ours wget':>14s} {'|err|':>6s} | "
              f"{'ours curl':>14s} {'|err|':>6s} | {'naive':>6s} {'|err|':>6s}")
    print(f"Metadata meter benchmark ({'quick' if quick else 'full'}), probe interval "
          f"{INTERVAL} s, busybox sh; times in seconds")
    print(header)
    print("-" * len(header))
    errors = {"wget": [], "curl": [], "naive": []}
    missed = {"wget": [], "curl": [], "naive": []}
    outside = {"wget": [], "curl": []}
    for row in rows:
        truth = row["truth"]
        cells = []
        for label in ("wget", "curl"):
            downtime, bound, count, ongoing = row[label]
            err = abs(downtime - truth)
            errors[label].append(err)
            if err > bound + 0.05:
                outside[label].append(row["name"])
            if truth >= 0.4 and count == 0:
                missed[label].append(row["name"])
            mark = "*" if any(ongoing) else " "
            cells.append(f"{downtime:6.2f}±{bound:4.2f}{mark}{count:d}o {err:6.3f}")
        naive = row["naive"]
        errors["naive"].append(abs(naive - truth))
        if truth >= 0.4 and naive == 0:
            missed["naive"].append(row["name"])
        print(f"{row['name']:22s} {truth:6.2f} | {cells[0]} | {cells[1]} | "
              f"{naive:6.2f} {abs(naive - truth):6.3f}")
    print("(ours: estimate±bound, * = reported ongoing, Nо = outages found)")
    for line in skipped:
        print(f"skipped {line}")
    print()
    for label in ("wget", "curl", "naive"):
        values = errors[label]
        mae = sum(values) / len(values) if values else float("nan")
        name = "naive loop" if label == "naive" else f"ours ({label})"
        extra = ""
        if label in outside:
            extra = f"; |error| beyond bound+0.05 s: {outside[label] or 'none'}"
        print(f"{name:12s} mean |error| {mae:.3f} s; outages >= 0.4 s missed: "
              f"{missed[label] or 'none'}{extra}")
    print()
    print(f"CPU per probe (busybox sh, healthy service, runs of {cpu_seconds / 4:g} s and "
          f"{cpu_seconds:g} s, getrusage(RUSAGE_CHILDREN), marginal cost of one probe):")
    per = {}
    for label, (per_probe, startup, probes) in cpu.items():
        per[label] = per_probe
        print(f"  {label:24s} {per_probe * 1000:6.2f} ms/probe   (one-time start-up "
              f"{startup * 1000:5.1f} ms; {probes} probes in the long run)")
    naive_cpu = per.get("naive curl|grep", float("nan"))
    print()
    print("Acceptance targets (reported, not asserted):")
    for label in ("wget", "curl"):
        values = errors[label]
        mae = sum(values) / len(values) if values else float("nan")
        ratio = per[f"ours {label}"] / naive_cpu
        print(f"  ours ({label}): mean |error| {mae:.3f} <= 0.1: {'PASS' if mae <= 0.1 else 'FAIL'}"
              f"; none >= 0.4 s missed: {'PASS' if not missed[label] else 'FAIL'}"
              f"; CPU/probe {ratio:.2f} of naive <= 1/3: {'PASS' if ratio <= 1 / 3 else 'FAIL'}")
    print(f"wall time {elapsed:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
