"""VM guests (``guests="vm"``): real QEMU guests, per-host metadata in
network namespaces, floating IPs that follow the guest, real live migration.

Needs root, qemu-system-x86, iproute2, iptables, curl and the guest image
(built at first use from Debian packages: CI builds it before the tests,
which run in network namespaces without the package registry). Without
them the tests skip, or fail under ``RMP_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from devcloud_helpers import (boot_guest, clients, live_migrate, make_config,
                              quick_profile, wait_for)
from prerequisites import require_vm_guests
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud.cloud import DevCloud
from rally_metadata_plugin.devcloud.config import DevCloudConfig, default_users
from rally_metadata_plugin.devcloud.profiles import Profile
from rally_metadata_plugin.devcloud.procfs import proc_argv
from rally_metadata_plugin.devcloud.vm import network, preflight, qemu

REPO = Path(__file__).resolve().parents[2]
METADATA = "http://169.254.169.254"
#: a TCG guest boots in 3-6 s on a loaded 2-core machine, and its first SSH
#: handshake (crypto under emulation) takes a while too
SSH_TIMEOUT = 60


def vm_config(tmp, serial: int, **overrides):
    return make_config(tmp, guests="vm", floating_cidr=f"172.31.{serial}.0/24",
                       **overrides)


@pytest.fixture(scope="module")
def vmcloud(tmp_path_factory):
    require_vm_guests()
    cloud = DevCloud(vm_config(tmp_path_factory.mktemp("vmcloud"), 1,
                               profile=quick_profile(FaultKind.REFUSED,
                                                     outage=(1.0, 1.0))))
    with cloud:
        yield cloud
    leftovers = json.loads((cloud.state_dir / "leftovers.json").read_text())
    assert leftovers["vm_after_stop"] == {"qemu_processes": [], "namespaces": [],
                                          "links": []}
    # the deleted server's QEMU died with it; the others only at the stop
    assert leftovers["processes_of_deleted_servers"] == {}


@pytest.fixture(scope="module")
def guest(vmcloud):
    return boot_guest(vmcloud, name="vm-one", ssh_timeout=SSH_TIMEOUT)


def uptime(guest) -> float:
    return float(guest.run("cut -d' ' -f1 /proc/uptime")[1])


def test_a_vm_guest_is_cirros_like_with_its_hostname_key_and_metadata(vmcloud, guest):
    status, out, _ = guest.run(
        f"hostname; id -un; grep -c ssh- ~/.ssh/authorized_keys; "
        f"curl -s {METADATA}/openstack/latest/meta_data.json")
    assert status == 0, out
    hostname, user, keys, document = out.split("\n", 3)
    assert hostname == "vm-one.novalocal" and user == "cirros" and keys == "1"
    assert json.loads(document)["uuid"] == guest.server_id
    assert "BusyBox" in guest.run("sh --help 2>&1 | head -1")[1]
    boots = [b for b in vmcloud.vm.guests.boots() if b["server_id"] == guest.server_id]
    assert boots and boots[0]["error"] is None
    assert boots[0]["boot_seconds"] < vmcloud.config.vm_boot_timeout


def test_live_migration_moves_the_qemu_and_the_floating_ip(vmcloud, guest):
    vm = vmcloud.vm
    session = guest.ssh()
    channel = session.get_transport().open_session()
    channel.exec_command("while :; do cat /proc/uptime; sleep 0.1; done")
    source = host_of(vmcloud, guest.server_id)
    record = live_migrate(vmcloud, guest)
    destination = record["destination"]
    assert record["source"] == source != destination
    qemu_figures = record["qemu"]
    assert qemu_figures["status"] == "completed" and qemu_figures["downtime_ms"] > 0
    assert record["pause_start"] < record["switchover_at"] < record["pause_end"]
    assert record["pause_end"] - record["pause_start"] < 2.0
    # the outage starts at the switchover, on the destination
    assert abs(record["outage_start"] - record["switchover_at"]) < 0.05
    assert record["kind"] == "refused"
    # one QEMU, on the destination; the host's metadata serves it only there
    processes = qemu.own_processes(vm.guests.name_prefix + "-" + "")
    assert len([p for p in processes if guest.server_id in _cmdline(p)]) == 1
    assert not vm.metadata.listening(source, guest.server_id)
    assert vm.network.routed_to(guest.address) == destination
    # the SSH session opened before the migration still streams
    time.sleep(0.5)
    assert not channel.exit_status_ready()
    received = b""
    while channel.recv_ready():
        received += channel.recv(65536)
    assert received.count(b"\n") >= 3
    session.close()
    wait_for(lambda: guest.run(f"curl -s -m 1 {METADATA}/latest/meta-data/hostname")[1]
             == "vm-one.novalocal", timeout=10, what="metadata after the outage")
    assert vm.metadata.listening(destination, guest.server_id)


def host_of(cloud, server_id: str) -> str:
    return cloud.backend.compute.find_server(server_id).host


def _cmdline(pid: int) -> str:
    return " ".join(proc_argv(pid) or ())


def test_deleting_a_server_kills_its_qemu_and_removes_its_tap(vmcloud):
    doomed = boot_guest(vmcloud, name="vm-two", ssh_timeout=SSH_TIMEOUT)
    prefix = vmcloud.vm.guests.name_prefix + "-" + doomed.server_id
    host = host_of(vmcloud, doomed.server_id)
    assert qemu.own_processes(prefix)
    clients(vmcloud, "alice").nova("2.79").servers.delete(doomed.server_id)
    wait_for(lambda: not qemu.own_processes(prefix), what="QEMU gone")
    links = network.run(["ip", "-n", vmcloud.vm.network.namespace(host), "-o",
                         "link"]).stdout
    assert f"tap{doomed.server_id[:8]}" not in links
    assert network.run(["ip", "route", "show", f"{doomed.address}/32"]).stdout == ""


def test_a_paused_migration_stops_the_guest_clock(tmp_path):
    require_vm_guests()
    profile = Profile.from_dict({
        "name": "test-paused", "outcomes": [{"weight": 1}],
        "vm": {"paused": True, "max_bandwidth_mib": 32, "dirty_memory_mb": 16}})
    with DevCloud(vm_config(tmp_path, 2, profile=profile)) as cloud:
        guest = boot_guest(cloud, name="vm-paused", ssh_timeout=SSH_TIMEOUT)
        before_guest, before = uptime(guest), time.monotonic()
        record = live_migrate(cloud, guest)
        after_guest, after = uptime(guest), time.monotonic()
        stopped = record["pause_end"] - record["pause_start"]
        assert stopped > 1.0, record
        assert record["qemu"]["knobs"]["paused"] is True
        # the guest did not see the time it was stopped
        assert (after - before) - (after_guest - before_guest) > stopped - 0.3
        assert record["outage_start"] is None            # this profile has none


def test_preflight_names_what_to_install(monkeypatch):
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(preflight.shutil, "which",
                        lambda tool: None if tool == qemu.QEMU else "/usr/bin/" + tool)
    found = preflight.problems()
    assert any("need root" in p for p in found)
    assert any("apt-get install qemu-system-x86" in p for p in found)


def _serve_vm(state: Path, cidr: str) -> tuple[subprocess.Popen, SimpleNamespace]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rally_metadata_plugin.devcloud.cli", "serve",
         "--guests", "vm", "--floating-cidr", cidr, "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    info = json.loads(line)
    assert info["guests"] == "vm" and info["ssh_port"] == 22
    remote = SimpleNamespace(auth_url=info["auth_url"], config=DevCloudConfig(
        state_dir=state, users=default_users(1), guests="vm", floating_cidr=cidr))
    return proc, remote


def test_serve_with_vm_guests_leaves_nothing_after_sigterm_or_sigkill(tmp_path):
    require_vm_guests()
    proc, remote = _serve_vm(tmp_path / "term", "172.31.3.0/24")
    mine = f"{network.NS_PREFIX}{proc.pid}"
    try:
        boot_guest(remote, user="demo", name="term-vm", ssh_timeout=SSH_TIMEOUT)
        assert qemu.own_processes(mine + "-") and network.own_namespaces(mine)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    assert qemu.own_processes(mine + "-") == []
    assert network.own_namespaces(mine) == [] and network.own_links(f"vm{proc.pid}.") == []
    leftovers = json.loads((tmp_path / "term" / "leftovers.json").read_text())
    assert leftovers["vm_after_stop"] == {"qemu_processes": [], "namespaces": [],
                                          "links": []}

    # SIGKILL: nothing runs the cleanup; QEMU dies with its parent all the
    # same, and the next devcloud removes the namespaces left
    proc, remote = _serve_vm(tmp_path / "kill", "172.31.4.0/24")
    mine = f"{network.NS_PREFIX}{proc.pid}"
    try:
        boot_guest(remote, user="demo", name="kill-vm", ssh_timeout=SSH_TIMEOUT)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    wait_for(lambda: qemu.own_processes(mine + "-") == [], timeout=10,
             what="QEMU gone with its devcloud")
    assert network.own_namespaces(mine)
    with DevCloud(vm_config(tmp_path / "next", 5)):
        assert network.own_namespaces(mine) == []
        assert network.own_links(f"vm{proc.pid}.") == []


DROP_PROFILE = {"name": "test-drop", "vm": {}, "outcomes": [
    {"weight": 1, "kinds": {"drop": 1}, "outage_seconds": 3.0}]}


def test_a_drop_outage_drops_the_guests_packets_on_the_destination(tmp_path):
    require_vm_guests()
    with DevCloud(vm_config(tmp_path, 6, profile=Profile.from_dict(DROP_PROFILE))) as cloud:
        guest = boot_guest(cloud, name="vm-drop", ssh_timeout=SSH_TIMEOUT)
        record = live_migrate(cloud, guest)
        assert record["kind"] == "drop"
        _, out, _ = guest.run(f"curl -s -m 0.5 {METADATA}/latest/meta-data/hostname; "
                              f"echo \" exit $?\"")
        assert out.strip() == "exit 28", (out, record)      # timed out, not refused
        rules = lambda: network.run(["ip", "netns", "exec", cloud.vm.network.namespace(
            record["destination"]), "iptables", "-w", "-S", "INPUT"]).stdout
        assert "-j DROP" in rules()
        wait_for(lambda: guest.run(f"curl -s -m 1 {METADATA}/latest/meta-data/hostname")[1]
                 == "vm-drop.novalocal", timeout=10, what="metadata after the drop")
        assert "-j DROP" not in rules()


def test_process_guests_refuse_a_profile_with_drop(tmp_path):
    with pytest.raises(ValueError, match="run the VM guests"):
        DevCloud(make_config(tmp_path, profile=Profile.from_dict(DROP_PROFILE))).start()


def test_aborting_a_migration_in_pre_copy_keeps_the_guest_on_its_source(tmp_path):
    require_vm_guests()
    # 1 MiB/s: pre-copy of about 100 MiB cannot end before the abort
    profile = Profile.from_dict({"name": "test-slow-copy", "outcomes": [{"weight": 1}],
                                 "vm": {"max_bandwidth_mib": 1}})
    with DevCloud(vm_config(tmp_path, 7, profile=profile)) as cloud:
        guest = boot_guest(cloud, name="vm-abort", ssh_timeout=SSH_TIMEOUT)
        source = host_of(cloud, guest.server_id)
        admin = clients(cloud, "admin").nova("2.79")
        admin.servers.live_migrate(guest.server_id, host=None, block_migration="auto")
        (migration,) = wait_for(lambda: admin.server_migrations.list(guest.server_id),
                                what="migration listed")
        wait_for(lambda: len(qemu.own_processes(
            cloud.vm.guests.name_prefix + "-" + guest.server_id)) == 2,
            what="the destination QEMU")
        time.sleep(1.0)                                   # in pre-copy
        admin.server_migrations.live_migration_abort(guest.server_id, migration.id)
        record = wait_for(lambda: next((r for r in cloud.truth()
                                        if r["status"] != "running"), None),
                          timeout=20, what="the migration's end")
        assert record["status"] == "cancelled", record
        assert record["qemu"]["status"] == "cancelled"
        assert record["pause_start"] is None and record["outage_start"] is None
        wait_for(lambda: admin.servers.get(guest.server_id).status == "ACTIVE",
                 what="ACTIVE again")
        assert host_of(cloud, guest.server_id) == source
        assert len(qemu.own_processes(
            cloud.vm.guests.name_prefix + "-" + guest.server_id)) == 1
        assert guest.run("hostname")[1].strip() == "vm-abort.novalocal"
