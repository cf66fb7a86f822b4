"""The metadata server process: what it is told, what it answers, and that it
never outlives the devcloud that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import boottime, metadata_channel
from rally_metadata_plugin.devcloud.metadata import MetadataService
from rally_metadata_plugin.devcloud.model.outages import (InstanceIdentity,
                                                          MetadataReplica, Outage)
from rally_metadata_plugin.devcloud.procfs import is_alive

ONE = InstanceIdentity("server-1", "one", "one.novalocal", "project", 0, "nova",
                       {"key": "ssh-ed25519 AAAA"}, ("10.0.0.3",), ("172.24.4.9",),
                       "i-00000001")
TWO = InstanceIdentity("server-2", "two", "two.novalocal", "project", 1, "nova",
                       {}, ("10.0.0.4",), (), "i-00000002")


def _outage(kind: FaultKind, start: float, end: float | None, host: str = "compute-2",
            decoy: InstanceIdentity | None = None) -> Outage:
    return Outage("server-1", "migration-1", host, kind, start, end, decoy)


# -- the replica and the channel's records (pure) --------------------------------

def test_the_replica_answers_the_latest_outage_covering_the_instant():
    replica = MetadataReplica()
    assert replica.view("server-1", 10.0) is None           # never told of it
    replica.server_changed("server-1", "compute-1", ONE)
    assert replica.view("server-1", 10.0).outage is None
    first = _outage(FaultKind.HTTP_503, 10.0, 20.0)
    second = _outage(FaultKind.HANG, 15.0, 16.0)
    replica.outage_added(first)
    replica.outage_added(second)
    assert replica.view("server-1", 9.99).outage is None
    assert replica.view("server-1", 12.0).outage is first
    assert replica.view("server-1", 15.5).outage is second
    assert replica.view("server-1", 16.0).outage is first   # end excluded
    assert replica.view("server-1", 20.0).outage is None
    assert replica.view("server-1", 12.0).host == "compute-1"
    replica.server_changed("server-1", "compute-2", ONE)
    assert replica.view("server-1", 12.0).host == "compute-2"
    replica.server_deleted("server-1")
    assert replica.view("server-1", 12.0) is None
    replica.server_changed("server-1", "compute-2", ONE)     # outages went with it
    assert replica.view("server-1", 12.0).outage is None


def test_the_replica_refuses_on_the_outage_s_host_only_when_asked_per_host():
    replica = MetadataReplica()
    replica.server_changed("server-1", "compute-2", ONE)
    replica.outage_added(_outage(FaultKind.REFUSED, 10.0, None, host="compute-2"))
    replica.outage_added(_outage(FaultKind.HTTP_500, 0.0, None, host="compute-1"))
    assert not replica.refused_at("server-1", 9.0)
    assert replica.refused_at("server-1", 10.0)
    assert replica.refused_at("server-1", 1e9)              # no end
    assert replica.refused_at("server-1", 10.0, "compute-2")
    assert not replica.refused_at("server-1", 10.0, "compute-1")
    assert not replica.refused_at("server-2", 10.0)


def test_records_cross_the_channel_unchanged():
    outage = _outage(FaultKind.WRONG_INSTANCE, 1.5, None, decoy=TWO)
    assert metadata_channel.identity_from(metadata_channel.identity_fields(ONE)) == ONE
    assert metadata_channel.outage_from(metadata_channel.outage_fields(outage)) == outage
    mine, theirs = metadata_channel.pair()
    with mine, theirs:
        with open(os.devnull) as passed:
            metadata_channel.send(mine, {"op": "x", "n": 1}, (passed.fileno(),))
            message, fds = metadata_channel.receive(theirs)
        assert message == {"op": "x", "n": 1} and len(fds) == 1
        os.close(fds[0])
        mine.shutdown(2)
        with pytest.raises(metadata_channel.ChannelClosed):
            metadata_channel.receive(theirs)


# -- the process -------------------------------------------------------------------

@pytest.fixture
def service():
    identities = {"server-1": ONE, "server-2": TWO}
    backend = SimpleNamespace(migrations=SimpleNamespace(
        instance_identity=lambda server: identities[server.id]))
    service = MetadataService(backend, hang_limit=2.0)
    try:
        yield service
    finally:
        service.stop()


def _get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers["X-Devcloud-Host"], response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["X-Devcloud-Host"], e.read().decode()


def test_each_outage_kind_is_served_in_its_window_from_the_replica(service):
    server = SimpleNamespace(id="server-1", host="compute-1")
    service.server_changed(server)
    service.server_changed(SimpleNamespace(id="server-2", host="compute-1"))
    url = service.url("server-1") + "/latest/meta-data/hostname"
    service.sync()
    assert _get(url) == (200, "compute-1", "one.novalocal")
    server.host = "compute-2"                    # switched over
    service.server_changed(server)
    service.sync()
    assert _get(url) == (200, "compute-2", "one.novalocal")
    now = boottime.now()
    service.outage_added(_outage(FaultKind.HTTP_500, now, now + 0.6))
    service.outage_added(_outage(FaultKind.WRONG_INSTANCE, now + 0.6, now + 1.2, decoy=TWO))
    service.outage_added(_outage(FaultKind.HANG, now + 1.2, now + 1.8))
    service.sync()
    assert _get(url)[0] == 500
    time.sleep(max(0.0, now + 0.8 - boottime.now()))
    assert _get(url) == (200, "compute-2", "two.novalocal")
    time.sleep(max(0.0, now + 1.3 - boottime.now()))
    with pytest.raises(OSError):                 # held, never answered
        _get(url, timeout=0.3)
    time.sleep(max(0.0, now + 1.9 - boottime.now()))
    assert _get(url) == (200, "compute-2", "one.novalocal")


def test_the_process_exits_with_the_devcloud_however_it_died(tmp_path):
    """A SIGKILLed devcloud cannot stop it: the channel's end, closed by the
    kernel, does."""
    script = textwrap.dedent("""
        import sys, time
        from types import SimpleNamespace
        from rally_metadata_plugin.devcloud.metadata import MetadataService
        service = MetadataService(SimpleNamespace(migrations=SimpleNamespace()))
        print(service.pid, flush=True)
        time.sleep(60)
    """)
    devcloud = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(devcloud.stdout.readline())
        assert is_alive(server_pid)
        devcloud.send_signal(signal.SIGKILL)
        devcloud.wait(10)
        deadline = time.monotonic() + 5
        while is_alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_alive(server_pid), "the metadata server outlived its devcloud"
    finally:
        devcloud.kill()
        devcloud.wait()
        devcloud.stdout.close()
