"""Each compute host's metadata service, as a VM guest reaches it.

A guest asks ``http://169.254.169.254`` through its tap; the address is
local in the namespace of the host it runs on. The host's service has one
listening socket per guest it hosts, bound to ``169.254.169.254:80`` *and*
to the guest's tap (``SO_BINDTODEVICE``): the kernel hands each listener
only its guest's connections, so the instance is known without trusting
its source address (neutron's proxy trusts network + source IP). The
sockets are created inside the host's namespace by a thread of the
metadata server process that joined it (:func:`..setns.in_namespace`), and
served, like the process guests' endpoints, by that process
(:mod:`..metadata_server`): one asyncio event loop for every listener and
held connection, 503 past its connection limit.

A listener answers only while the model says the instance is on that host,
so a host never serves an instance it does not hold. The documents come
from :func:`..metadata.answer` (documents and fault state, as for the
process guests); the outage kinds are applied per instance:

* ``refused``: the instance's listener on that host is closed for the
  outage (connects fail with ECONNREFUSED), then reopened;
* ``drop``: an iptables rule in the host's namespace drops the guest's
  packets to the service (connects time out);
* ``hang``: accepted, never answered (until the client leaves or
  ``hang_limit``), a descriptor and no thread;
* ``http_500`` / ``http_503``: that status;
* ``wrong_instance``: 200 with another instance's metadata.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import limits
from rally_metadata_plugin.devcloud.metadata import MetadataService
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.outages import Outage
from rally_metadata_plugin.devcloud.timers import TimerThread
from rally_metadata_plugin.devcloud.vm.network import (METADATA_ADDRESS,
                                                       HostNetwork)

LOG = logging.getLogger(__name__)


def tap_socket(tap: str) -> socket.socket:
    """A socket bound to the metadata address on ``tap`` (call it in the
    host's namespace)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                        tap.encode())
        sock.bind((METADATA_ADDRESS, 80))
    except OSError:
        sock.close()
        raise
    return sock


def _key(host: str, server_id: str) -> str:
    return f"{host}/{server_id}"


class VmMetadataService:
    """Every host's metadata listeners; follows outages of the model."""

    def __init__(self, backend: CloudBackend, network: HostNetwork,
                 scheduler: TimerThread, hang_limit: float = 30.0,
                 max_connections: int = limits.METADATA_CONNECTIONS,
                 stall_log: Path | None = None) -> None:
        self._network = network
        self._scheduler = scheduler
        self._service = MetadataService(backend, hang_limit, max_connections,
                                        stall_log)
        self._taps: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def attach(self, host: str, server_id: str, tap: str) -> None:
        """Serve ``server_id`` on ``host`` through ``tap`` (listening soon,
        unless a ``refused`` outage covers that moment)."""
        with self._lock:
            self._taps[(host, server_id)] = tap
        self._service.serve(_key(host, server_id), server_id, host,
                            {"netns": self._network.namespace(host), "tap": tap})

    def detach(self, host: str, server_id: str) -> None:
        with self._lock:
            self._taps.pop((host, server_id), None)
        self._service.unserve(_key(host, server_id))

    def listening(self, host: str, server_id: str) -> bool:
        return self._service.listening(_key(host, server_id))

    def server_changed(self, server: Server) -> None:
        self._service.update_server(server)

    def server_deleted(self, server: Server) -> None:
        self._service.forget_server(server.id)

    def outage_added(self, outage: Outage) -> None:
        self._service.outage_added(outage)
        if outage.kind == FaultKind.DROP:
            self._schedule_drop(outage)

    def _schedule_drop(self, outage: Outage) -> None:
        with self._lock:
            tap = self._taps.get((outage.host, outage.server_id))
        if tap is None:
            return

        def set_drop(dropped: bool) -> None:
            try:
                self._network.drop_metadata(outage.host, tap, dropped)
            except Exception:       # the host's namespace went with a stop
                LOG.warning("drop outage of %s on %s: %s", outage.server_id,
                            outage.host, "on" if dropped else "off",
                            exc_info=True)

        self._scheduler.call_at(outage.start, lambda: set_drop(True))
        if outage.end is not None:
            self._scheduler.call_at(outage.end, lambda: set_drop(False))

    def stop(self) -> None:
        with self._lock:
            self._taps.clear()
        self._service.stop()
