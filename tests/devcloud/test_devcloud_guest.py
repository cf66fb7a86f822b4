"""Guests: real SSH servers on floating IPs running a real shell, with
either busybox build (the one on PATH; Debian's static one, which runs its
applets before PATH)."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import time

import paramiko
import pytest
from rally.utils import sshutils

from devcloud_helpers import (boot_guest, clients, make_config, quick_profile,
                              run, start_loop, wait_for)
from prerequisites import require
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import cgroups, guests
from rally_metadata_plugin.devcloud.cloud import DevCloud
from rally_metadata_plugin.devcloud.procfs import proc_state
from rally_metadata_plugin.testing.guest import (BUSYBOX_BUILDS,
                                                 busybox_binary,
                                                 shell_unavailable)


def busybox_build(build: str) -> str:
    """The binary of a busybox build (skip, or fail in CI, without it)."""
    require(busybox_binary(build) is not None, shell_unavailable(build))
    return busybox_binary(build)


@pytest.fixture(scope="module", params=BUSYBOX_BUILDS)
def guest(request, tmp_path_factory):
    """A guest of a devcloud whose guests run this busybox build."""
    cloud = DevCloud(make_config(
        tmp_path_factory.mktemp("devcloud"),
        busybox=busybox_build(request.param),
        profile=quick_profile(FaultKind.REFUSED, outage=(0.3, 0.3))))
    with cloud:
        yield boot_guest(cloud, name="guest-vm")


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


def test_rally_sshutils_against_the_guest(guest):
    config = guest.cloud.config
    ssh = sshutils.SSH(config.ssh_user, guest.address,
                       port=config.ssh_port, pkey=guest.private_key)
    started = time.monotonic()
    ssh.wait(timeout=10, interval=0.2)          # exec "uname", no stdin
    status, out, err = ssh.execute("/bin/sh",
                                   stdin="echo hello\nhostname\n")
    assert status == 0 and out.split() == ["hello", "guest-vm"]
    # no stall waiting for stdin EOF that never comes
    assert time.monotonic() - started < 6
    ssh.close()


def _server_transports() -> list[paramiko.Transport]:
    import threading
    return [t for t in threading.enumerate()
            if isinstance(t, paramiko.Transport) and t.server_mode]


def test_idle_connections_wake_once_a_second_and_end_at_once(guest):
    """An idle connection's thread checks for a close once a second, not
    paramiko's ten times (hundreds of them starved the metadata loop); a
    close still ends it at once."""
    before = set(_server_transports())
    with guest.ssh() as client:
        assert run(client, "uname")[0] == 0
        [transport] = wait_for(lambda: [t for t in _server_transports()
                                        if t not in before and t.is_active()] or None,
                               timeout=5)
        assert transport.sock.gettimeout() == 1.0
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert guest.cloud.ssh.acceptor.open_connections() >= 1
        closed = time.monotonic()
        transport.close()
        transport.join(timeout=5)
        assert not transport.is_alive()
        assert time.monotonic() - closed < 0.5


def require_own_hostnames(guest, every_way: bool = False) -> None:
    """Guests have the server's hostname: a UTS namespace, or else (not for
    ``every_way``) a hostname shim their busybox does not bypass."""
    naming = guest.cloud.guests.naming
    require(not (naming.shim and (every_way or naming.shim_bypassed)),
            "no UTS namespace for guests here (needs root or user namespaces)"
            + (", and this busybox bypasses the hostname shim"
               if naming.shim_bypassed else ""))


def test_guest_environment(guest):
    require_own_hostnames(guest)
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


def test_every_way_to_read_the_hostname_says_the_servers(guest):
    """What the meter reads first (/proc/sys/kernel/hostname), the shell's
    ``hostname`` (an applet or not) and uname agree, also in a detached
    process."""
    require_own_hostnames(guest, every_way=True)
    command = ("cat /proc/sys/kernel/hostname; hostname; uname -n; "
               "busybox hostname; sh -c 'setsid sh -c hostname' | cat")
    status, out, _ = guest.run(command)
    assert (status, out.split()) == (0, ["guest-vm"] * 5)
    assert os.uname().nodename != "guest-vm"


def test_without_uts_namespaces_a_shim_stands_in_or_the_log_says_why(
        monkeypatch, caplog):
    """No ``unshare`` (or no right to use it): the ``hostname`` shim, which
    a busybox that runs its applets first bypasses, and the log says so."""
    monkeypatch.setattr(guests.shutil, "which",
                        lambda name, *a, **k: None if name == "unshare"
                        else shutil.which(name, *a, **k))
    for build in BUSYBOX_BUILDS:
        shell = (busybox_build(build), "sh")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=guests.LOG.name):
            naming = guests.Naming.detect(shell)
        assert naming.shim and naming.argv("x", "true") == [*shell, "-c", "true"]
        static = subprocess.run([*shell, "-c", "command -v wget"],
                                env={"PATH": "/nonexistent"}).returncode == 0
        assert naming.shim_bypassed is static
        assert ("busybox-static" in caplog.text) is static, caplog.text


def test_unprivileged_guests_are_named_in_a_user_namespace():
    """Not root: ``unshare --user --keep-caps`` lets ``hostname`` name it."""
    setpriv = shutil.which("setpriv")
    require(os.geteuid() == 0 and setpriv is not None,
            "needs root and util-linux setpriv to run as another user")
    shell = ("/bin/sh",)          # one that any user may run
    naming = guests.Naming((shutil.which("unshare"), "--user",
                            "--map-current-user", "--keep-caps", "--uts"),
                           shell)
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*as_nobody, "unshare", "--user", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel gives unprivileged users no user "
                    f"namespaces: {probe.stderr.decode().strip()}")
    result = subprocess.run(
        [*as_nobody, *naming.argv("named-vm", "cat /proc/sys/kernel/hostname; "
                                              "hostname; id -u")],
        capture_output=True, text=True, cwd="/",
        env={"PATH": guests.SYSTEM_PATH})
    assert result.stdout.split() == ["named-vm", "named-vm", "65534"], result


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


def _cgroup_lines(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read().splitlines()
    except OSError:
        return []


def require_cpu_group(group) -> None:
    require(group is not None,
            "no CPU cgroup can be made here (root and a writable cgroup "
            "'cpu' hierarchy are needed; the devcloud's log says which)")


def test_the_metadata_server_has_the_heaviest_cpu_group_which_goes_with_it(tmp_path):
    cloud = DevCloud(make_config(tmp_path))
    with cloud:
        group = cloud.metadata.cpu_group
        require_cpu_group(group)
        assert group.pids() == [cloud.metadata.pid]
        weight = int((group.path / group.weight_file).read_text())
        assert weight == cgroups.weight_for(group.weight_file, cgroups.METADATA_SHARES)
        assert weight > int((cloud.guests.cpu_group.path / group.weight_file).read_text())
        path = group.path
    assert not path.exists()


def test_guest_processes_share_a_cpu_group_that_goes_with_the_devcloud(
        tmp_path):
    cloud = DevCloud(make_config(tmp_path))
    with cloud:
        group = cloud.guests.cpu_group
        require_cpu_group(group)
        guest = boot_guest(cloud, name="cpu-group-vm")
        pid = start_loop(guest)
        # a command's processes are in the group from the start (here a
        # child of its shell), and so is the detached loop with what it forks
        _, out, _ = guest.run("cat /proc/self/cgroup")
        assert any(line.endswith("/" + group.path.name)
                   for line in out.splitlines())
        assert any(line.endswith("/" + group.path.name)
                   for line in _cgroup_lines(pid))
        tagged = cloud.guests.guest(guest.server_id).processes()
        assert pid in tagged and set(tagged) <= set(group.pids())
        weight = (group.path / group.weight_file).read_text().strip()
        assert int(weight) in (cgroups.V1_SHARES, cgroups.V2_WEIGHT)
        path = group.path
    assert not path.exists()
    assert proc_state(pid) in (None, "Z")
