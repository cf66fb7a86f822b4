"""Guests: real SSH servers on floating IPs running a real shell."""

from __future__ import annotations

import io
import json
import os
import socket
import time

import paramiko
import pytest
from rally.utils import sshutils

from devcloud_helpers import (boot_guest, clients, quick_profile, run,
                              start_loop, wait_for)
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud.procfs import proc_state


@pytest.fixture(scope="module")
def guest(devcloud):
    return boot_guest(devcloud, name="guest-vm")


def test_key_auth_and_wrong_key_rejected(guest):
    assert guest.run("uname")[0:2] == (0, "Linux\n")
    other = paramiko.RSAKey.generate(2048)
    buffer = io.StringIO()
    other.write_private_key(buffer)
    with pytest.raises(paramiko.AuthenticationException):
        guest.ssh(key=buffer.getvalue())


def test_two_channels_one_transport_stdin_and_exit_status(guest):
    with guest.ssh() as client:
        assert run(client, "uname")[0] == 0
        status, out, err = run(client, "/bin/sh",
                               stdin="echo from-stdin\nexit 3\n")
        assert (status, out) == (3, "from-stdin\n")
        status, out, err = run(client, "echo oops >&2; exit 5")
        assert (status, err) == (5, "oops\n")


def test_rally_sshutils_against_the_guest(guest, devcloud):
    ssh = sshutils.SSH(devcloud.config.ssh_user, guest.address,
                       port=devcloud.config.ssh_port, pkey=guest.private_key)
    started = time.monotonic()
    ssh.wait(timeout=10, interval=0.2)          # exec "uname", no stdin
    status, out, err = ssh.execute("/bin/sh",
                                   stdin="echo hello\nhostname\n")
    assert status == 0 and out.split() == ["hello", "guest-vm"]
    # no stall waiting for stdin EOF that never comes
    assert time.monotonic() - started < 6
    ssh.close()


def test_guest_environment(guest):
    status, out, _ = guest.run(
        "echo $HOSTNAME; hostname; pwd; echo $HOME; "
        "echo ${http_proxy}; echo no_proxy=${no_proxy}${NO_PROXY}; "
        "echo $DEVCLOUD_GUEST")
    lines = out.splitlines()
    assert lines[0] == lines[1] == "guest-vm"
    assert lines[2] == lines[3] and lines[2].endswith(guest.server_id)
    assert lines[4].startswith("http://127.0.0.1:")
    assert lines[5] == "no_proxy="
    assert lines[6] == guest.server_id


def test_curl_reaches_this_servers_metadata(guest):
    status, out, _ = guest.run(
        "curl -s -g --connect-timeout 0.5 -m 1 -o body -w '%{http_code}' "
        "http://169.254.169.254/openstack/latest/meta_data.json; "
        "echo; cat body")
    code, body = out.split("\n", 1)
    assert code == "200"
    meta = json.loads(body)
    assert meta["uuid"] == guest.server_id
    assert meta["hostname"].startswith("guest-vm")
    assert set(meta) >= {"uuid", "name", "hostname", "availability_zone",
                         "launch_index", "project_id", "public_keys"}
    _, hostname, _ = guest.run(
        "busybox wget -q -O - http://169.254.169.254/latest/meta-data/"
        "hostname")
    assert hostname.startswith("guest-vm")
    _, listing, _ = guest.run(
        "curl -s http://169.254.169.254/latest/meta-data/; echo; "
        "curl -s http://169.254.169.254/openstack/latest/")
    assert "instance-id" in listing and "meta_data.json" in listing


def test_detached_loop_survives_freezes_and_dies_with_server(
        devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(
        FaultKind.HTTP_500, pause=(1.5, 1.5), outage=(0.2, 0.2)))
    guest = boot_guest(cloud, name="loop-vm")
    pid = start_loop(guest)
    # the SSH channels that started it are closed: it still runs
    assert proc_state(pid) in ("S", "R")
    ticks = guest.run("wc -l < ticks")[1]
    time.sleep(0.3)
    assert int(guest.run("wc -l < ticks")[1]) > int(ticks)

    admin = clients(cloud, "admin").nova("2.79")
    admin.servers.live_migrate(guest.server_id, host=None,
                               block_migration="auto")
    wait_for(lambda: cloud.truth() and cloud.truth()[0]["pause_start"],
             what="pause start", interval=0.01)
    time.sleep(0.2)
    assert proc_state(pid) == "T"
    home = cloud.guests.guest(guest.server_id).home
    frozen_ticks = (home / "ticks").read_text().count("\n")
    time.sleep(0.5)
    assert (home / "ticks").read_text().count("\n") == frozen_ticks
    record = wait_for(lambda: next((r for r in cloud.truth()
                                    if r["status"] == "completed"), None),
                      what="completed migration")
    assert record["pause_end"] - record["pause_start"] >= 1.5
    wait_for(lambda: proc_state(pid) in ("S", "R"), what="thawed")

    clients(cloud, "alice").nova("2.79").servers.delete(guest.server_id)
    wait_for(lambda: proc_state(pid) in (None, "Z"), timeout=5,
             what="guest killed")
    assert not os.path.exists(f"/proc/{pid}") or proc_state(pid) == "Z"
    with pytest.raises(OSError):
        socket.create_connection((guest.address, cloud.config.ssh_port),
                                 timeout=1)
