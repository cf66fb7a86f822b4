"""The metadata service, as each guest reaches it.

A guest's ``http_proxy`` points at its own endpoint, ``127.0.0.1:<port>``,
allocated at boot and stable for the server's lifetime (a running meter keeps
its environment across migrations). Requests for ``http://169.254.169.254/...``
therefore arrive in absolute form; aiohttp turns them into an ordinary
path. Direct requests (``GET /latest/...``) are served the same. Every
endpoint is served by one asyncio event loop in one thread, however many
guests and held connections there are; past ``METADATA_CONNECTIONS`` open
connections (:mod:`.limits`) a new one is answered 503. The VM guests' hosts
(:mod:`.vm.metadata`) serve their listeners the same way.

Each request is answered as served by the server's *current* host, applying
the fault state at the instant it arrived (see
:meth:`~.model.migrations.LiveMigrationBackend.metadata_view`); the kinds are
those of :class:`~rally_metadata_plugin.core.faults.FaultKind` but ``drop``:

* ``refused``: the endpoint's listening socket is closed for the outage, so
  connects fail with ECONNREFUSED; it is reopened on the same port after.
* ``hang``: accepted, never answered; held (a descriptor, no thread) until
  the client gives up (or ``hang_limit`` seconds), then dropped.
* ``http_500`` / ``http_503``: that status.
* ``wrong_instance``: 200 with another instance's metadata.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import random
import socket
import threading
from pathlib import Path
from typing import Callable, Hashable, Iterable

from aiohttp import web

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import boottime, limits
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.outages import (
    InstanceIdentity, MetadataView, Outage)
from rally_metadata_plugin.devcloud import serving
from rally_metadata_plugin.devcloud.timers import TimerThread

LOG = logging.getLogger(__name__)

OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15",
                      "2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27",
                      "2020-10-14", "latest")
EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10",
                "2007-12-15", "2008-02-01", "2008-09-01", "2009-04-04",
                "latest")

#: Seconds the event loop may run late before it counts as a stall: a probe
#: bounded at 1 s fails on a stall of about that length.
STALL_SECONDS = 0.5
#: The state directory's file of stalls (see :meth:`MetadataService._stalled`).
STALL_LOG = "metadata-stalls.jsonl"


def read_stalls(state_dir: Path) -> list[float]:
    """The seconds of each stall in ``state_dir``'s :data:`STALL_LOG` (none
    when it is missing or unreadable)."""
    try:
        return [float(json.loads(line)["seconds"])
                for line in (state_dir / STALL_LOG).read_text().splitlines() if line]
    except (OSError, ValueError, KeyError, TypeError):
        return []


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


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a request gets: ``reply`` (status, type, body), ``hang`` (held
    unanswered) or ``drop`` (connection closed unanswered)."""

    action: str
    status: int = 0
    content_type: str = ""
    body: str = ""


def answer(view: MetadataView | None, host: str, path: str) -> Answer:
    """The answer of ``host``'s service to a request for ``path`` whose
    arrival the model describes as ``view`` (pure; both guest backends
    answer through it)."""
    if view is None:
        return Answer("drop")                      # the server is gone
    if view.host != host:
        # not (or no longer) on this host: neutron's proxy finds no port
        return Answer("reply", 404, "text/plain", "Not Found")
    kind = FaultKind(view.outage.kind) if view.outage else None
    if kind in (FaultKind.REFUSED, FaultKind.DROP):
        # arrived just before the listener closed, or the rule was in place
        return Answer("drop")
    if kind is FaultKind.HANG:
        return Answer("hang")
    if kind is not None and kind.http_status is not None:
        return Answer("reply", kind.http_status, "text/plain",
                      f"{kind.http_status} devcloud metadata outage\n")
    identity = view.identity
    if kind is FaultKind.WRONG_INSTANCE and view.outage.decoy is not None:
        identity = view.outage.decoy
    status, content_type, body = render(path, identity)
    return Answer("reply", status, content_type, body)



# -- endpoints --------------------------------------------------------------------

_OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\n"
               b"Content-Type: text/plain\r\nContent-Length: 37\r\n"
               b"Connection: close\r\n\r\n"
               b"devcloud metadata service overloaded\n")


class _Overloaded(asyncio.Protocol):
    """A connection past the service's limit: 503, then closed.

    The answer goes first, then a FIN; the connection is closed once the
    client has closed its side (or after a second). Closing with the
    client's request still unread would send an RST, which can reach the
    client before the 503 does.
    """

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        try:
            transport.write(_OVERLOADED)
            transport.write_eof()
        except OSError:
            # the client left before it was accepted (a loaded service
            # accepts late): nothing to answer; logging each one's
            # traceback is what an overload can least afford
            transport.abort()
            return
        self._deadline = asyncio.get_running_loop().call_later(
            1.0, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass                # the request, unread

    def eof_received(self) -> bool:
        return False        # close the transport

    def connection_lost(self, exc) -> None:
        if self._deadline is not None:
            self._deadline.cancel()


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
        """A socket bound to a free pool port, ready to listen."""
        with self._lock:
            for _ in range(200):
                port = self._rng.randint(self._low, self._high)
                if port in self._taken:
                    continue
                try:
                    sock = bound_socket(port)
                except OSError:
                    continue
                self._taken.add(port)
                return sock
        raise OSError("no free port for a metadata endpoint")

    def release(self, port: int) -> None:
        with self._lock:
            self._taken.discard(port)


def bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


class _CountingServer(web.Server):
    """aiohttp's server, counting its open connections into the service's
    total: every accept checks that total, and summing the endpoints' own
    counts there would cost as much as there are guests."""

    def __init__(self, service: "MetadataService", *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._service = service
        self._counted: set = set()

    def connection_made(self, handler, transport) -> None:
        super().connection_made(handler, transport)
        if handler not in self._counted:
            self._counted.add(handler)
            self._service.open_connections += 1

    def connection_lost(self, handler, exc=None) -> None:
        if handler in self._counted:
            self._counted.discard(handler)
            self._service.open_connections -= 1
        super().connection_lost(handler, exc)


class MetadataEndpoint:
    """One server's metadata listener.

    A process guest's is ``127.0.0.1:<port>`` and answers as the server's
    current host (``host`` None); a VM guest's is a socket in one compute
    host's namespace (see :mod:`.vm.metadata`) and answers as that host.
    ``bind`` makes a new listening socket, the same one again, after a
    ``refused`` outage closed it.

    Its state belongs to the service's event loop; other threads change it
    through :meth:`reconcile` and :meth:`close_for_good`.
    """

    def __init__(self, service: "MetadataService", server_id: str,
                 sock: socket.socket | None,
                 bind: Callable[[], socket.socket],
                 host: str | None = None) -> None:
        self._service = service
        self.server_id = server_id
        self.host = host
        self._bind = bind
        self.port = sock.getsockname()[1] if sock is not None else None
        self._unused: socket.socket | None = sock   # bound, not yet served
        self._listener: asyncio.AbstractServer | None = None
        self._http = _CountingServer(service, self._handle,
                                     handler_cancellation=True,
                                     keepalive_timeout=limits.METADATA_IDLE_SECONDS,
                                     access_log=None, loop=service.events.loop)
        self._gone: asyncio.Event | None = None     # created in the loop
        self._switching = asyncio.Lock()
        self.closed_for_good = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def reconcile(self) -> concurrent.futures.Future:
        """Listen unless deleted or inside a ``refused`` outage.

        Decided and done in the event loop, soon; the caller does not wait
        (the returned future says when it is done). Callers include API
        threads that may hold the model's lock, which the loop needs to
        answer requests: waiting here would deadlock, and under load an API
        call must not stall on the metadata service anyway.
        """
        return asyncio.run_coroutine_threadsafe(self._reconcile(),
                                                self._service.events.loop)

    async def _reconcile(self) -> None:
        # one at a time, deciding inside: opening awaits, and two reconciles
        # interleaved there would bind the port twice (one listener leaked,
        # the port lost for good) or apply a stale decision last
        async with self._switching:
            refused = self._service.backend.migrations.refused_at(
                self.server_id, boottime.now())
            if self.closed_for_good or refused:
                self._close()
                if not self.closed_for_good:
                    await self._prepare_reopen()
            else:
                await self._open()

    async def _prepare_reopen(self) -> None:
        """Bind the next listening socket now, while refused: a bound socket
        that does not listen refuses connects all the same, and the end of
        the outage then costs only ``listen`` (a VM host's bind takes a
        thread that joins its namespace: late under load, it would stretch
        the outage past the truth's end)."""
        if self._unused is not None:
            return
        try:
            sock = await self._service.events.loop.run_in_executor(None, self._bind)
        except OSError:
            return                      # _open tries again
        if self.closed_for_good or self._unused is not None:
            sock.close()
        else:
            self._unused = sock

    async def _open(self) -> None:
        if self._listener is not None:
            return
        sock, self._unused = self._unused, None
        loop = self._service.events.loop
        for attempt in range(50):
            try:
                if sock is None:
                    # in a thread: a VM host's socket is made in its namespace
                    sock = await loop.run_in_executor(None, self._bind)
                self._listener = await loop.create_server(
                    self._protocol, sock=sock, backlog=128)
                if self.closed_for_good:    # deleted while it opened
                    self._close()
                return
            except OSError as e:
                if sock is not None:
                    sock.close()
                    sock = None
                if attempt == 49:
                    LOG.error("metadata %s on %s: cannot listen: %s",
                              self.server_id, self.host or "its port", e)
                    return
                await asyncio.sleep(0.01)

    def _close(self) -> None:
        # closes the listening socket at once: new connects are refused
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def close_for_good(self) -> None:
        """Stop listening for good, soon (see :meth:`reconcile`)."""
        self._service.events.loop.call_soon_threadsafe(self._close_for_good)

    def _close_for_good(self) -> None:
        self.closed_for_good = True
        self._close()
        if self._unused is not None:
            self._unused.close()
            self._unused = None
        if self._gone is not None:
            self._gone.set()        # held requests end, unanswered
        for handler in self._http.connections:
            handler.force_close()

    def _protocol(self) -> asyncio.BaseProtocol:
        if self._service.full():
            self._service.overloaded_answers += 1
            return _Overloaded()
        return self._http()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._service.handle(self, request)

    async def held_until_gone(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the endpoint closes for good (the
        client leaving cancels the request's task)."""
        if self._gone is None:
            self._gone = asyncio.Event()
        if self.closed_for_good:
            return
        try:
            await asyncio.wait_for(self._gone.wait(), seconds)
        except asyncio.TimeoutError:
            pass


class MetadataService:
    """All metadata endpoints; implements :class:`~.model.backend.CloudListener`.

    Every endpoint is served by one asyncio event loop in one thread
    (:class:`~.serving.EventLoopThread`), whatever the number of guests and
    of held connections.
    """

    def __init__(self, backend: CloudBackend, scheduler: TimerThread,
                 hang_limit: float = 30.0,
                 max_connections: int = limits.METADATA_CONNECTIONS,
                 stall_log: Path | None = None) -> None:
        self.backend = backend
        self._scheduler = scheduler
        self.hang_limit = hang_limit
        self.max_connections = max_connections
        self.events = serving.EventLoopThread("devcloud-metadata")
        #: (CLOCK_BOOTTIME start, seconds) of every stall, in the loop's order
        self.stalls: list[tuple[float, float]] = []
        self._stall_log = stall_log
        self.events.watch_stalls(STALL_SECONDS, self._stalled)
        self._pool = _PortPool()
        self._endpoints: dict[str, MetadataEndpoint] = {}
        self._lock = threading.Lock()
        self.overloaded_answers = 0     # 503s for being full, since start
        self.open_connections = 0       # every endpoint's, kept by the loop

    def endpoint(self, server_id: str) -> MetadataEndpoint:
        """The process guest's endpoint, created (and opened) on first use."""
        with self._lock:
            endpoint = self._endpoints.get(server_id)
            if endpoint is None:
                sock = self._pool.bind()
                port = sock.getsockname()[1]
                endpoint = MetadataEndpoint(self, server_id, sock,
                                            lambda: bound_socket(port))
                self._endpoints[server_id] = endpoint
        endpoint.reconcile()
        return endpoint

    def add_endpoint(self, key: Hashable, server_id: str, host: str,
                     bind: Callable[[], socket.socket]) -> MetadataEndpoint:
        """Serve ``server_id`` as ``host`` on sockets ``bind`` makes (a VM
        host's listener), under ``key``; opened soon unless refused."""
        endpoint = MetadataEndpoint(self, server_id, None, bind, host)
        with self._lock:
            old = self._endpoints.get(key)
            self._endpoints[key] = endpoint
        if old is not None:
            old.close_for_good()
        endpoint.reconcile()
        return endpoint

    def find(self, key: Hashable) -> MetadataEndpoint | None:
        with self._lock:
            return self._endpoints.get(key)

    def remove_endpoint(self, key: Hashable) -> None:
        """Stop serving ``key``'s endpoint (soon, see :meth:`~MetadataEndpoint.reconcile`)."""
        with self._lock:
            endpoint = self._endpoints.pop(key, None)
        if endpoint is not None:
            endpoint.close_for_good()

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
            if endpoint.port is not None:
                self._pool.release(endpoint.port)

    def outage_added(self, outage: Outage) -> None:
        if outage.kind != FaultKind.REFUSED:
            return
        self.endpoint(outage.server_id)
        self.follow_refused(outage, outage.server_id)

    def follow_refused(self, outage: Outage, key: Hashable) -> None:
        """At the ``refused`` outage's start and end, reconcile the endpoint
        then under ``key`` (closed, then open again)."""
        def reconcile() -> None:
            endpoint = self.find(key)
            if endpoint is not None:
                endpoint.reconcile()

        self._scheduler.call_at(outage.start, reconcile)
        if outage.end is not None:
            self._scheduler.call_at(outage.end, reconcile)

    def stop(self) -> None:
        if self.events.loop.is_closed():
            return                      # stopped already
        with self._lock:
            endpoints, self._endpoints = list(self._endpoints.values()), {}

        def close_all() -> None:
            for endpoint in endpoints:
                endpoint._close_for_good()
        try:
            # one trip to the loop for all of them, and a short one: a stop
            # must not wait on a busy loop (stopping it drops what is left)
            self.events.call(close_all, timeout=2.0)
        except Exception as e:
            LOG.warning("metadata endpoints not closed in time: %r", e)
        finally:
            self.events.stop(timeout=2.0)

    def _stalled(self, seconds: float) -> None:
        """The loop answered nothing for ``seconds``: a guest's probe that
        failed then measured this machine's overload, not the cloud model,
        so it is said (the log, and ``stall_log`` as JSON lines)."""
        start = boottime.now() - seconds
        LOG.warning("metadata service stalled for %.1f s: this process was short of CPU or "
                    "of the interpreter lock; guests' probes in that time may fail on it",
                    seconds)
        if self._stall_log is not None:
            with self._stall_log.open("a") as f:
                f.write(json.dumps({"start": round(start, 3),
                                    "seconds": round(seconds, 3)}) + "\n")
        self.stalls.append((start, seconds))

    # requests, in the event loop

    def full(self) -> bool:
        """Whether the open connections reached ``max_connections`` (asked
        in the event loop, which owns the count)."""
        return self.open_connections >= self.max_connections

    async def handle(self, endpoint: MetadataEndpoint,
                     request: web.BaseRequest) -> web.StreamResponse:
        arrival = boottime.now()
        response = self._answer(endpoint, request, arrival)
        if response is _HOLD:
            await endpoint.held_until_gone(self.hang_limit)
            response = None
        if response is None:
            return _dropped(request)
        return response

    def _answer(self, endpoint: MetadataEndpoint, request: web.BaseRequest,
                arrival: float):
        """The response, None to drop the connection unanswered, or _HOLD
        to hold it first."""
        view = self.backend.migrations.metadata_view(endpoint.server_id, arrival)
        # a process guest's endpoint is its own: it answers as whichever
        # host the server is on; a VM host's answers as that host
        host = endpoint.host or (view.host if view else "")
        result = answer(view, host, request.path)
        if result.action == "drop":
            return None
        if result.action == "hang":
            return _HOLD
        return _response(request, host, result.status,
                         result.content_type, result.body)


_HOLD = object()


def _response(request: web.BaseRequest, host: str, status: int,
              content_type: str, body: str) -> web.Response:
    payload = body.encode() if request.method != "HEAD" else b""
    # which host served it: handy when reading a failing run
    return web.Response(status=status, body=payload,
                        headers={"Content-Type": content_type,
                                 "X-Devcloud-Host": host})


def _dropped(request: web.BaseRequest) -> web.StreamResponse:
    """Close the connection without a byte of answer.

    aborting the transport sends nothing (an RST, no HTTP), which the
    client sees as its server vanishing; aiohttp then has nothing to write
    the returned (never sent) response to.
    """
    if request.transport is not None:
        request.transport.abort()
    response = web.Response(status=500)
    response.force_close()
    return response
