"""The metadata service, as each guest reaches it.

A guest's ``http_proxy`` points at its own endpoint, ``127.0.0.1:<port>``,
allocated at boot and stable for the server's lifetime (a running meter keeps
its environment across migrations). Requests for ``http://169.254.169.254/...``
therefore arrive in absolute form; werkzeug turns them into an ordinary
path. Direct requests (``GET /latest/...``) are served the same.

Each request is answered as served by the server's *current* host, applying
the fault state at the instant it arrived (see
:meth:`~.model.migrations.LiveMigrationBackend.metadata_view`); the kinds are
those of :class:`~rally_metadata_plugin.core.faults.FaultKind` but ``drop``:

* ``refused``: the endpoint's listening socket is closed for the outage, so
  connects fail with ECONNREFUSED; it is reopened on the same port after.
* ``hang``: accepted, never answered; held until the client gives up (or
  ``hang_limit`` seconds), then dropped.
* ``http_500`` / ``http_503``: that status.
* ``wrong_instance``: 200 with another instance's metadata.
"""

from __future__ import annotations

import json
import logging
import random
import select
import socket
import threading
from typing import Iterable

from werkzeug.serving import BaseWSGIServer
from werkzeug.wrappers import Request, Response

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.migrations import (
    InstanceIdentity, Outage)
from rally_metadata_plugin.devcloud import serving
from rally_metadata_plugin.devcloud.timers import TimerThread

LOG = logging.getLogger(__name__)

OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15",
                      "2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27",
                      "2020-10-14", "latest")
EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10",
                "2007-12-15", "2008-02-01", "2008-09-01", "2009-04-04",
                "latest")


# -- documents -------------------------------------------------------------------

def meta_data_json(identity: InstanceIdentity) -> dict:
    return {
        "uuid": identity.uuid,
        "name": identity.name,
        "hostname": identity.hostname,
        "availability_zone": identity.availability_zone,
        "launch_index": identity.launch_index,
        "project_id": identity.project_id,
        "public_keys": dict(identity.public_keys),
        "keys": [{"name": name, "type": "ssh", "data": key}
                 for name, key in identity.public_keys.items()],
        "meta": {},
        "devices": [],
        "random_seed": "",
    }


def ec2_meta_data(identity: InstanceIdentity) -> dict[str, str]:
    """The EC2 tree as flat paths under ``meta-data/``."""
    tree = {
        "ami-id": "ami-00000001",
        "ami-launch-index": str(identity.launch_index),
        "hostname": identity.hostname,
        "instance-id": identity.ec2_id,
        "instance-type": "m1.tiny",
        "local-hostname": identity.hostname,
        "local-ipv4": identity.fixed_ips[0] if identity.fixed_ips else "",
        "public-hostname": identity.hostname,
        "public-ipv4": (identity.floating_ips[0]
                        if identity.floating_ips else ""),
        "placement/availability-zone": identity.availability_zone,
        "reservation-id": "r-devcloud",
        "security-groups": "default",
    }
    for index, key in enumerate(identity.public_keys.values()):
        tree[f"public-keys/{index}/openssh-key"] = key
    return tree


def _listing(names: Iterable[str]) -> str:
    return "\n".join(names)


def render(path: str, identity: InstanceIdentity) -> tuple[int, str, str]:
    """``(status, content type, body)`` for a metadata path."""
    parts = [p for p in path.split("/") if p]
    text = "text/plain; charset=UTF-8"
    if not parts:
        return 200, text, _listing(EC2_VERSIONS + ("openstack",))
    if parts[0] == "openstack":
        if len(parts) == 1:
            return 200, text, _listing(OPENSTACK_VERSIONS)
        if parts[1] not in OPENSTACK_VERSIONS:
            return 404, text, "Not Found"
        if len(parts) == 2:
            return 200, text, _listing(("meta_data.json", "network_data.json",
                                        "vendor_data.json", "vendor_data2.json"))
        documents = {
            "meta_data.json": meta_data_json(identity),
            "network_data.json": {"links": [], "networks": [],
                                  "services": []},
            "vendor_data.json": {}, "vendor_data2.json": {},
        }
        if len(parts) == 3 and parts[2] in documents:
            return 200, "application/json", json.dumps(documents[parts[2]])
        return 404, text, "Not Found"
    if parts[0] in EC2_VERSIONS:
        if len(parts) == 1:
            return 200, text, _listing(("meta-data/",))
        if parts[1] != "meta-data":
            return 404, text, "Not Found"
        tree = ec2_meta_data(identity)
        key = "/".join(parts[2:])
        if key in tree:
            return 200, text, tree[key]
        if key == "public-keys":
            # EC2 lists keys as "<index>=<name>"
            return 200, text, _listing(
                f"{i}={name}" for i, name in enumerate(identity.public_keys))
        prefix = key + "/" if key else ""
        children = sorted({
            rest.split("/")[0] + ("/" if "/" in rest else "")
            for rest in (k[len(prefix):] for k in tree if k.startswith(prefix))
        })
        if children:
            return 200, text, _listing(children)
        return 404, text, "Not Found"
    return 404, text, "Not Found"


# -- endpoints --------------------------------------------------------------------

class _PortPool:
    """Ports for metadata endpoints, below the ephemeral range.

    A closed (``refused``) endpoint must get its port back; a port from the
    ephemeral range could meanwhile become the source port of some outgoing
    connection, and the re-bind would fail.
    """

    def __init__(self, low: int = 20000) -> None:
        self._low = low
        self._high = self._ephemeral_low() - 1
        self._taken: set[int] = set()
        self._lock = threading.Lock()
        self._rng = random.Random()

    @staticmethod
    def _ephemeral_low() -> int:
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 32768

    def bind(self) -> socket.socket:
        """A listening-ready socket bound to a free pool port."""
        with self._lock:
            for _ in range(200):
                port = self._rng.randint(self._low, self._high)
                if port in self._taken:
                    continue
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    sock.close()
                    continue
                self._taken.add(port)
                return sock
        raise OSError("no free port for a metadata endpoint")

    def release(self, port: int) -> None:
        with self._lock:
            self._taken.discard(port)


class MetadataEndpoint:
    """One server's metadata listener: ``127.0.0.1:<port>``."""

    def __init__(self, service: "MetadataService", server_id: str,
                 sock: socket.socket) -> None:
        self._service = service
        self.server_id = server_id
        self.port = sock.getsockname()[1]
        self._reserved: socket.socket | None = sock
        self._server: BaseWSGIServer | None = None
        self._lock = threading.Lock()
        self.closed_for_good = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def reconcile(self) -> None:
        """Listen unless deleted or inside a ``refused`` outage."""
        refused = self._service.backend.migrations.refused_at(self.server_id,
                                                   boottime.now())
        with self._lock:
            if self.closed_for_good.is_set() or refused:
                self._close()
            else:
                self._open()

    def _open(self) -> None:
        if self._server is not None:
            return
        if self._reserved is not None:
            # first open: werkzeug binds itself, so release the reservation
            # just before (same port, SO_REUSEADDR)
            self._reserved.close()
            self._reserved = None
        for attempt in range(50):
            try:
                self._server = serving.serve(self._service.wsgi_app(self),
                                             self.port,
                                             f"metadata-{self.port}")
                break
            except OSError as e:
                if attempt == 49:
                    LOG.error("metadata %s: cannot reopen port %s: %s",
                              self.server_id, self.port, e)
                    return
                threading.Event().wait(0.01)

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            serving.close(server)

    def close_for_good(self) -> None:
        self.closed_for_good.set()
        with self._lock:
            self._close()
            if self._reserved is not None:
                self._reserved.close()
                self._reserved = None


class MetadataService:
    """All metadata endpoints; implements :class:`~.model.backend.CloudListener`."""

    def __init__(self, backend: CloudBackend, scheduler: TimerThread,
                 hang_limit: float = 30.0) -> None:
        self.backend = backend
        self._scheduler = scheduler
        self.hang_limit = hang_limit
        self._pool = _PortPool()
        self._endpoints: dict[str, MetadataEndpoint] = {}
        self._lock = threading.Lock()

    def endpoint(self, server_id: str) -> MetadataEndpoint:
        """The server's endpoint, created (and opened) on first use."""
        with self._lock:
            endpoint = self._endpoints.get(server_id)
            if endpoint is None:
                endpoint = MetadataEndpoint(self, server_id, self._pool.bind())
                self._endpoints[server_id] = endpoint
        endpoint.reconcile()
        return endpoint

    def url(self, server_id: str) -> str:
        return self.endpoint(server_id).url

    # CloudListener

    def server_changed(self, server: Server) -> None:
        self.endpoint(server.id)

    def server_deleted(self, server: Server) -> None:
        with self._lock:
            endpoint = self._endpoints.pop(server.id, None)
        if endpoint is not None:
            endpoint.close_for_good()
            self._pool.release(endpoint.port)

    def outage_added(self, outage: Outage) -> None:
        if outage.kind != FaultKind.REFUSED:
            return
        endpoint = self.endpoint(outage.server_id)
        self._scheduler.call_at(outage.start, endpoint.reconcile)
        if outage.end is not None:
            self._scheduler.call_at(outage.end, endpoint.reconcile)

    def stop(self) -> None:
        with self._lock:
            endpoints, self._endpoints = list(self._endpoints.values()), {}
        for endpoint in endpoints:
            endpoint.close_for_good()

    # the WSGI application of an endpoint

    def wsgi_app(self, endpoint: MetadataEndpoint):
        def app(environ, start_response):
            arrival = boottime.now()
            request = Request(environ)
            response = self._answer(endpoint, request, arrival)
            if response is None:
                _drop(environ)
                response = Response(b"", status=500)
            return response(environ, start_response)
        return app

    def _answer(self, endpoint: MetadataEndpoint, request: Request,
                arrival: float) -> Response | None:
        """The response, or None to drop the connection unanswered."""
        view = self.backend.migrations.metadata_view(endpoint.server_id, arrival)
        if view is None:
            return None
        identity = view.identity
        kind = FaultKind(view.outage.kind) if view.outage else None
        if kind is FaultKind.REFUSED:
            # arrived in the instant before the listener closed: as refused
            # as we can make it
            return None
        if kind is FaultKind.HANG:
            self._hold(request.environ, endpoint)
            return None
        if kind is not None and kind.http_status is not None:
            status = kind.http_status
            return self._response(request, view.host, status, "text/plain",
                                  f"{status} devcloud metadata outage\n")
        if kind is FaultKind.WRONG_INSTANCE and view.outage.decoy is not None:
            identity = view.outage.decoy
        status, content_type, body = render(request.path, identity)
        return self._response(request, view.host, status, content_type, body)

    @staticmethod
    def _response(request: Request, host: str, status: int,
                  content_type: str, body: str) -> Response:
        response = Response(body if request.method != "HEAD" else b"",
                            status=status, content_type=content_type)
        # which host served it: handy when reading a failing run
        response.headers["X-Devcloud-Host"] = host
        return response

    def _hold(self, environ: dict, endpoint: MetadataEndpoint) -> None:
        """Hold the connection until the client leaves, the endpoint goes
        or ``hang_limit`` passes."""
        sock: socket.socket | None = environ.get("werkzeug.socket")
        deadline = boottime.now() + self.hang_limit
        while sock is not None and boottime.now() < deadline:
            if endpoint.closed_for_good.is_set():
                return
            try:
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return              # the client closed its end
            except OSError:
                return


def _drop(environ: dict) -> None:
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
