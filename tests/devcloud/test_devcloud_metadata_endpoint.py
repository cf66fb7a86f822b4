"""A metadata endpoint's listener under concurrent open/close decisions.

A ``refused`` outage closes an endpoint's listening socket and its end
reopens it on the same port, decided by whichever thread notices first (the
timer thread, a server change). Interleaved decisions once leaked a listener,
and the port could never be reopened: the guest saw an endless outage.
"""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from rally_metadata_plugin.devcloud.metadata import MetadataService, bound_socket
from rally_metadata_plugin.devcloud.timers import TimerThread


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except ConnectionRefusedError:
        return False


@pytest.fixture
def switched():
    """A metadata service whose model says ``refused`` as ``state`` does."""
    state = {"refused": False}
    backend = SimpleNamespace(migrations=SimpleNamespace(
        refused_at=lambda server_id, when: state["refused"]))
    timers = TimerThread()
    timers.start()
    service = MetadataService(backend, timers)
    try:
        yield state, service
    finally:
        service.stop()
        timers.stop()


def test_concurrent_reconciles_leave_exactly_the_decided_state(switched):
    state, service = switched
    endpoint = service.endpoint("server-1")
    endpoint.reconcile().result(10)     # opened soon, not at once
    assert _accepts(endpoint.port)
    for round_ in range(30):
        state["refused"] = round_ % 2 == 0
        done = []
        threads = [threading.Thread(
            target=lambda: done.append(endpoint.reconcile())) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        for future in done:
            future.result(10)
        assert endpoint.listening is not state["refused"], round_
        assert _accepts(endpoint.port) is not state["refused"], round_
    service.server_deleted(SimpleNamespace(id="server-1"))
    service.events.call(lambda: None)   # after the close, in the loop
    assert not _accepts(endpoint.port)


def test_a_refused_endpoint_binds_its_next_socket_before_the_outage_ends(switched):
    """The end of a ``refused`` outage costs a ``listen``, not a bind (a VM
    host's bind joins a namespace from a new thread: slow under load, it
    would stretch the outage past its end in the truth)."""
    state, service = switched
    with bound_socket(0) as free:
        port = free.getsockname()[1]
    binds = []

    def bind() -> socket.socket:
        binds.append(threading.current_thread().name)
        return bound_socket(port)

    endpoint = service.add_endpoint(("host-1", "server-1"), "server-1", "host-1", bind)
    endpoint.reconcile().result(10)
    assert _accepts(port) and len(binds) == 1
    state["refused"] = True
    endpoint.reconcile().result(10)
    assert not _accepts(port)               # bound, not listening: refused
    assert len(binds) == 2                  # the next socket, ready
    state["refused"] = False
    endpoint.reconcile().result(10)
    assert _accepts(port) and len(binds) == 2
    assert all(name != "devcloud-metadata" for name in binds)  # never in the loop
    service.remove_endpoint(("host-1", "server-1"))
    service.events.call(lambda: None)
    assert not _accepts(port)
    assert service.find(("host-1", "server-1")) is None
