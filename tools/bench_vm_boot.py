#!/usr/bin/env python3
"""VM guest boots, one alone and N at once: QEMU's start to the ready mark.

    python3 tools/bench_vm_boot.py [--counts 1,4] [--rounds 3]

Starts a devcloud with VM guests (``--guests vm``) and, ``--rounds`` times
for each count N of ``--counts``, creates N servers in one request (they
go ACTIVE together, as a task's concurrent iterations do: their QEMUs start
within a fraction of a second), waits for every guest's ready mark, prints
its figures and deletes them. Per boot it records:

* QEMU's start to the guest's ready mark as the devcloud measures it
  (``vm-boots.jsonl``, what ``tools/bench_guests.py`` reports);
* the CPU seconds QEMU used until the devcloud saw the mark (``/proc``,
  read within 20 ms of it): the cost of a boot, which decides how many fit
  on the machine's cores at once, and which a busy machine disturbs less
  than the wall time;
* the guest's own uptime in its ready line (its clock starts with the
  kernel's timekeeping, after QEMU, the firmware and the early kernel).

A benchmark, not a test: it prints figures and asserts nothing. It needs
root and qemu-system-x86 (see the README) and runs itself in a private
network namespace (``unshare -n``). Output (the devcloud's state, consoles
included) goes to ``out/bench-vm-boot/``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bootstrap  # noqa: E402

ROOT = _bootstrap.ROOT
#: set once the benchmark runs in its own network namespace
NETNS_MARK = "RMP_BENCH_VM_BOOT_NETNS"


def in_private_netns(argv: list[str]) -> None:
    """Re-run this command inside ``unshare -n`` (the devcloud's host
    namespaces and routes then leave the machine's network alone)."""
    if os.environ.get(NETNS_MARK) == "1":
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("bench_vm_boot needs root and unshare (util-linux)")
    env = {**os.environ, NETNS_MARK: "1"}
    os.execvpe("unshare", ["unshare", "-n", "sh", "-c",
                           'ip link set lo up && exec "$@"', "sh", *argv], env)


def cpu_seconds(pid: int) -> float | None:
    from rally_metadata_plugin.devcloud.procfs import proc_stat
    stat = proc_stat(pid)
    return None if stat is None else stat.cpu_seconds


def guest_uptime(cloud, server_id: str) -> float | None:
    """The uptime the guest printed in its ready line."""
    console = cloud.state_dir / "vms" / server_id / "boot.console"
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return None
    from rally_metadata_plugin.devcloud.vm.image import READY_MARK
    for line in text.splitlines():
        if line.startswith(READY_MARK + " "):
            try:
                return float(line.split()[-1])
            except ValueError:
                return None
    return None


class Bench:
    """One devcloud; :meth:`boot` boots N guests at once and measures."""

    def __init__(self, cloud, timeout: float) -> None:
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3
        from neutronclient.v2_0 import client as neutron_client
        from novaclient import client as nova_client
        self.cloud = cloud
        self.timeout = timeout
        user = cloud.config.users[1]
        session = ks_session.Session(auth=v3.Password(
            auth_url=cloud.auth_url, username=user.name,
            password=user.password, project_name=user.project,
            user_domain_name="Default", project_domain_name="Default"))
        self.nova = nova_client.Client("2.79", session=session)
        neutron = neutron_client.Client(session=session)
        self.network_id = neutron.create_network(
            {"network": {"name": "bench"}})["network"]["id"]
        neutron.create_subnet({"subnet": {
            "name": "bench", "network_id": self.network_id,
            "cidr": "10.3.0.0/24", "ip_version": 4}})
        self.key_name = "bench"
        self.nova.keypairs.create(self.key_name)
        self.image_id = self.nova.glance.list()[0].id

    def boot(self, count: int) -> list[dict]:
        guests = self.cloud.vm.guests
        known = {b["server_id"] for b in guests.boots()}
        self.nova.servers.create("bench", self.image_id, "1",
                                 key_name=self.key_name, min_count=count,
                                 max_count=count,
                                 nics=[{"net-id": self.network_id}])
        found: dict[str, dict] = {}
        cpu: dict[str, float | None] = {}
        pids: dict[str, int] = {}
        deadline = time.monotonic() + self.timeout
        while len(found) < count and time.monotonic() < deadline:
            for server_id, server_pids in guests.processes().items():
                pids.setdefault(server_id, server_pids[0])
            for record in guests.boots():
                server_id = record["server_id"]
                if server_id in known or server_id in found:
                    continue
                found[server_id] = record
                pid = pids.get(server_id)
                cpu[server_id] = cpu_seconds(pid) if pid else None
            time.sleep(0.02)
        rows = [{"server_id": s, "seconds": r["boot_seconds"],
                 "error": r["error"], "cpu": cpu[s],
                 "uptime": guest_uptime(self.cloud, s)}
                for s, r in found.items()]
        for server in self.nova.servers.list():
            server.delete()
        while guests.processes():
            time.sleep(0.1)
        return rows


def summary(values: list) -> str:
    from rally_metadata_plugin.devcloud import accuracy
    pair = accuracy.summary(values)
    return "n/a" if pair is None else f"{pair[0]:.2f} / {pair[1]:.2f}"


def main() -> int:
    _bootstrap.reexec_in_venv(os.path.abspath(__file__))
    in_private_netns([sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,4",
                        help="how many guests boot at once, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds N guests get to boot")
    parser.add_argument("--out", default=str(ROOT / "out" / "bench-vm-boot"))
    options = parser.parse_args()
    counts = [int(c) for c in options.counts.split(",")]
    from rally_metadata_plugin.devcloud.cloud import DevCloud
    from rally_metadata_plugin.devcloud.config import (DevCloudConfig,
                                                       default_users)
    out = pathlib.Path(options.out)
    shutil.rmtree(out, ignore_errors=True)
    config = DevCloudConfig(state_dir=out / "devcloud", guests="vm",
                            users=default_users(1), boot_seconds=0.2,
                            profile="healthy", seed=1)
    results: dict[int, list[dict]] = {n: [] for n in counts}
    with DevCloud(config) as cloud:
        print(f"accelerator {cloud.vm.accel}, test guest booted in "
              f"{cloud.vm.probe_boot_seconds:.2f} s", flush=True)
        bench = Bench(cloud, options.timeout)
        for round_ in range(1, options.rounds + 1):
            for count in counts:
                rows = bench.boot(count)
                results[count] += rows
                failed = [r["error"] for r in rows if r["error"]]
                print(f"round {round_}, {count} at once: QEMU start to ready "
                      + " ".join(f"{r['seconds']:.2f}" for r in rows
                                 if r["seconds"] is not None)
                      + f" s; CPU {summary([r['cpu'] for r in rows])} s"
                      + (f"; {len(rows)}/{count} booted" if len(rows) < count
                         else "")
                      + (f"; errors: {failed}" if failed else ""), flush=True)
    print(f"\n{options.rounds} rounds; mean / max over every guest\n")
    print("| at once | guests | QEMU start to ready (s) | QEMU CPU to ready (s) "
          "| guest uptime at ready (s) |")
    print("|---|---|---|---|---|")
    for count, rows in results.items():
        print(f"| {count} | {len(rows)} | {summary([r['seconds'] for r in rows])} "
              f"| {summary([r['cpu'] for r in rows])} "
              f"| {summary([r['uptime'] for r in rows])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
