"""Each compute host's metadata service, as a VM guest reaches it.

A guest asks ``http://169.254.169.254`` through its tap; the address is
local in the namespace of the host it runs on. The host's service has one
listening socket per guest it hosts, bound to ``169.254.169.254:80`` *and*
to the guest's tap (``SO_BINDTODEVICE``): the kernel hands each listener
only its guest's connections, so the instance is known without trusting
its source address (neutron's proxy trusts network + source IP). The
sockets are created inside the host's namespace by a thread that joined it
(:func:`..setns.in_namespace`) and served from the devcloud's threads.

A listener answers only while the model says the instance is on that host,
so a host never serves an instance it does not hold. The documents come
from :func:`..metadata.answer` (documents and fault state, as for the
process guests); the outage kinds are applied per instance:

* ``refused``: the instance's listener on that host is closed for the
  outage (connects fail with ECONNREFUSED), then reopened;
* ``drop``: an iptables rule in the host's namespace drops the guest's
  packets to the service (connects time out);
* ``hang``: accepted, never answered (until the client leaves or
  ``hang_limit``);
* ``http_500`` / ``http_503``: that status;
* ``wrong_instance``: 200 with another instance's metadata.
"""

from __future__ import annotations

import dataclasses
import http.server
import logging
import select
import socket
import socketserver
import threading

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.metadata import answer
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.outages import Outage
from rally_metadata_plugin.devcloud.setns import in_namespace
from rally_metadata_plugin.devcloud.timers import TimerThread
from rally_metadata_plugin.devcloud.vm.network import (METADATA_ADDRESS,
                                                       HostNetwork)

LOG = logging.getLogger(__name__)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Listener"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        listener = self.server
        arrival = boottime.now()
        path = self.path
        if "://" in path:                # absolute form, through a proxy
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        view = listener.service.backend.migrations.metadata_view(
            listener.server_id, arrival)
        result = answer(view, listener.host, path.split("?")[0])
        if result.action == "hang":
            self._hold()
            self.close_connection = True
            return
        if result.action == "drop":
            self.close_connection = True
            return
        body = result.body.encode()
        self.send_response(result.status)
        self.send_header("Content-Type", result.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Devcloud-Host", listener.host)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _hold(self) -> None:
        deadline = boottime.now() + self.server.service.hang_limit
        while boottime.now() < deadline and not self.server.closed.is_set():
            try:
                readable, _, _ = select.select([self.connection], [], [], 0.2)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return                      # the client gave up
            except OSError:
                return

    def log_message(self, format: str, *args) -> None:
        pass


class _Listener(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """An HTTP server on a socket made elsewhere (in a host namespace)."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, service: "VmMetadataService",
                 host: str, server_id: str) -> None:
        socketserver.BaseServer.__init__(self, sock.getsockname(), _Handler)
        self.socket = sock
        self.service = service
        self.host = host
        self.server_id = server_id
        self.closed = threading.Event()
        threading.Thread(target=self.serve_forever,
                         kwargs={"poll_interval": 0.5},
                         name=f"metadata-{host}-{server_id[:8]}",
                         daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        try:
            # new connects are refused at once, serve_forever wakes up
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.shutdown()
        self.server_close()


def _bound_socket(tap: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                        tap.encode())
        sock.bind((METADATA_ADDRESS, 80))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


@dataclasses.dataclass
class _Attachment:
    host: str
    server_id: str
    tap: str
    listener: _Listener | None = None


class VmMetadataService:
    """Every host's metadata listeners; follows outages of the model."""

    def __init__(self, backend: CloudBackend, network: HostNetwork,
                 scheduler: TimerThread, hang_limit: float = 30.0) -> None:
        self.backend = backend
        self.hang_limit = hang_limit
        self._network = network
        self._scheduler = scheduler
        self._attachments: dict[tuple[str, str], _Attachment] = {}
        self._lock = threading.Lock()

    def attach(self, host: str, server_id: str, tap: str) -> None:
        """Serve ``server_id`` on ``host`` through ``tap`` (listening unless
        a ``refused`` outage covers now)."""
        with self._lock:
            self._attachments[(host, server_id)] = _Attachment(host, server_id,
                                                               tap)
        self._reconcile(host, server_id)

    def detach(self, host: str, server_id: str) -> None:
        with self._lock:
            attachment = self._attachments.pop((host, server_id), None)
            listener = attachment.listener if attachment else None
            if attachment:
                attachment.listener = None
        if listener is not None:
            listener.close()

    def _reconcile(self, host: str, server_id: str) -> None:
        refused = self.backend.migrations.refused_at(server_id, boottime.now())
        with self._lock:
            attachment = self._attachments.get((host, server_id))
            if attachment is None:
                return
            if refused and attachment.listener is not None:
                listener, attachment.listener = attachment.listener, None
                listener.close()
            elif not refused and attachment.listener is None:
                sock = self._bind(host, attachment.tap)
                if sock is not None:
                    attachment.listener = _Listener(sock, self, host,
                                                    server_id)

    def _bind(self, host: str, tap: str) -> socket.socket | None:
        namespace = self._network.namespace(host)
        for attempt in range(50):
            try:
                return in_namespace(namespace, lambda: _bound_socket(tap))
            except OSError as error:
                if attempt == 49:
                    LOG.error("metadata on %s for %s: %s", host, tap, error)
                    return None
                threading.Event().wait(0.01)
        return None

    def listening(self, host: str, server_id: str) -> bool:
        with self._lock:
            attachment = self._attachments.get((host, server_id))
            return attachment is not None and attachment.listener is not None

    def outage_added(self, outage: Outage) -> None:
        if outage.kind == FaultKind.DROP:
            self._schedule_drop(outage)
            return
        if outage.kind != FaultKind.REFUSED:
            return
        reconcile = lambda: self._reconcile(outage.host, outage.server_id)  # noqa: E731
        self._scheduler.call_at(outage.start, reconcile)
        if outage.end is not None:
            self._scheduler.call_at(outage.end, reconcile)

    def _schedule_drop(self, outage: Outage) -> None:
        with self._lock:
            attachment = self._attachments.get((outage.host, outage.server_id))
        if attachment is None:
            return
        tap = attachment.tap

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
            keys = list(self._attachments)
        for host, server_id in keys:
            self.detach(host, server_id)
