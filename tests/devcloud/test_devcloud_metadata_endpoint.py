"""A metadata endpoint's listener as ``refused`` outages come and go, served
by the real metadata server process.

A ``refused`` outage closes an endpoint's listening socket and its end
reopens it on the same port. Interleaved open/close decisions once leaked a
listener, and the port could never be reopened: the guest saw an endless
outage.
"""

from __future__ import annotations

import errno
import socket
import time
from types import SimpleNamespace

import pytest

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.metadata import MetadataService
from rally_metadata_plugin.devcloud.model.outages import InstanceIdentity, Outage

IDENTITY = InstanceIdentity("server-1", "one", "one.novalocal", "project", 0, "nova",
                            {"key": "ssh-ed25519 AAAA"}, ("10.0.0.3",), (), "i-00000001")
SERVER = SimpleNamespace(id="server-1", host="compute-1")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except ConnectionRefusedError:
        return False


def _bound_by_another(port: int) -> bool:
    """Whether some socket holds ``port`` bound (listening or not): ours,
    without SO_REUSEADDR, then cannot bind it."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            assert e.errno == errno.EADDRINUSE, e
            return True
    return False


@pytest.fixture
def service():
    backend = SimpleNamespace(migrations=SimpleNamespace(
        instance_identity=lambda server: IDENTITY))
    service = MetadataService(backend)
    try:
        yield service
    finally:
        service.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _refused(start: float, end: float | None) -> Outage:
    return Outage("server-1", "migration-1", "compute-1", FaultKind.REFUSED, start, end)


def test_a_refused_outage_closes_the_endpoint_for_its_window_only(service):
    service.server_changed(SERVER)
    port = _port(service.url("server-1"))
    service.sync()
    assert _accepts(port) and service.listening("server-1")
    now = boottime.now()
    service.outage_added(_refused(now + 0.5, now + 1.5))
    assert _accepts(port)                       # not yet
    time.sleep(max(0.0, now + 0.8 - boottime.now()))
    assert not _accepts(port)
    assert not service.listening("server-1")
    # the next socket is bound already: the end costs a listen, not a bind
    # (a VM host's bind joins a namespace from a new thread: slow under
    # load, it would stretch the outage past its end in the truth)
    assert _bound_by_another(port)
    time.sleep(max(0.0, now + 1.8 - boottime.now()))
    assert _accepts(port) and service.listening("server-1")


def test_back_to_back_refused_outages_leave_the_endpoint_listening(service):
    service.server_changed(SERVER)
    port = _port(service.url("server-1"))
    service.sync()
    start = boottime.now() + 0.2
    for index in range(40):                     # 10 ms each, 5 ms apart
        at = start + index * 0.015
        service.outage_added(_refused(at, at + 0.010))
    time.sleep(max(0.0, start + 40 * 0.015 + 0.2 - boottime.now()))
    assert service.listening("server-1")
    assert _accepts(port)


def test_an_endless_refused_outage_keeps_it_closed_until_the_server_goes(service):
    service.server_changed(SERVER)
    port = _port(service.url("server-1"))
    service.outage_added(_refused(boottime.now(), None))
    time.sleep(0.3)
    assert not _accepts(port) and not service.listening("server-1")
    service.server_deleted(SERVER)
    service.sync()
    assert not _bound_by_another(port)          # closed for good, nothing held
    assert not service.listening("server-1")


def test_a_deleted_server_s_endpoint_stops_listening(service):
    service.server_changed(SERVER)
    port = _port(service.url("server-1"))
    service.sync()
    assert _accepts(port)
    service.server_deleted(SERVER)
    service.sync()
    assert not _accepts(port)
