"""The metadata server process: every guest's metadata endpoint, served by
one asyncio event loop in a Python process of its own.

It runs apart from the devcloud because the devcloud's interpreter lock is
busy: with 200 guests its SSH gateway runs some 300 threads (paramiko
transports, command pumps, spawns), and an event loop sharing that lock
stalled for up to 8.6 s, failing every guest's probe meanwhile. Here the
loop has a lock to itself.

The process knows the model only through its :class:`~.model.outages.MetadataReplica`,
which the devcloud (:class:`.metadata.MetadataService`) keeps current over
a :mod:`.metadata_channel`: servers (host and identity), outages, and which
endpoints to serve. It schedules the ``refused`` outages' closes and reopens
itself, on its own loop, and records its own stalls. It exits when the
channel closes: when the devcloud stops it, or dies.

Endpoints: a process guest's is ``127.0.0.1:<port>``, its first socket bound
by the devcloud (which chose the port) and passed along; a VM guest's is
``169.254.169.254:80`` bound to the guest's tap in its host's network
namespace, bound here (:func:`.vm.metadata.tap_socket`). Past
``max_connections`` open connections, every endpoint together, a new one is
answered 503.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import threading
from pathlib import Path
from typing import Callable

from aiohttp import web

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import boottime, limits, serving
from rally_metadata_plugin.devcloud import metadata_channel as channel
from rally_metadata_plugin.devcloud.metadata import STALL_SECONDS, answer, bound_socket
from rally_metadata_plugin.devcloud.model.outages import MetadataReplica
from rally_metadata_plugin.devcloud.setns import in_namespace

LOG = logging.getLogger(__name__)


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


class _CountingServer(web.Server):
    """aiohttp's server, counting its open connections into the service's
    total: every accept checks that total, and summing the endpoints' own
    counts there would cost as much as there are guests."""

    def __init__(self, service: "MetadataServer", *args, **kwargs) -> None:
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


def binder(spec: dict) -> Callable[[], socket.socket]:
    """What makes an endpoint's listening socket: ``{"port": N}`` on
    127.0.0.1 (a process guest's), or ``{"netns": NAME, "tap": TAP}`` (a VM
    guest's, made by a thread that joined that namespace)."""
    if "port" in spec:
        port = int(spec["port"])
        return lambda: bound_socket(port)
    from rally_metadata_plugin.devcloud.vm.metadata import tap_socket
    netns, tap = str(spec["netns"]), str(spec["tap"])
    return lambda: in_namespace(netns, lambda: tap_socket(tap))


class MetadataEndpoint:
    """One server's metadata listener, owned by the server's event loop.

    A process guest's answers as the server's current host (``host``
    None); a VM guest's as its host. ``bind`` makes a new listening socket,
    the same one again, after a ``refused`` outage closed it.
    """

    def __init__(self, service: "MetadataServer", server_id: str,
                 sock: socket.socket | None,
                 bind: Callable[[], socket.socket],
                 host: str | None = None) -> None:
        self._service = service
        self.server_id = server_id
        self.host = host
        self._bind = bind
        self._unused: socket.socket | None = sock   # bound, not yet served
        self._listener: asyncio.AbstractServer | None = None
        self._http = _CountingServer(service, self._handle,
                                     handler_cancellation=True,
                                     keepalive_timeout=limits.METADATA_IDLE_SECONDS,
                                     access_log=None, loop=service.loop)
        self._gone = asyncio.Event()
        self._switching = asyncio.Lock()
        self.closed_for_good = False

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def reconcile(self) -> None:
        """Listen unless closed for good or inside a ``refused`` outage."""
        # one at a time, deciding inside: opening awaits, and two reconciles
        # interleaved there would bind the port twice (one listener leaked,
        # the port lost for good) or apply a stale decision last
        async with self._switching:
            refused = self._service.replica.refused_at(
                self.server_id, boottime.now(), self.host)
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
            sock = await self._service.loop.run_in_executor(None, self._bind)
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
        loop = self._service.loop
        for attempt in range(50):
            try:
                if sock is None:
                    # in a thread: a VM host's socket is made in its namespace
                    sock = await loop.run_in_executor(None, self._bind)
                self._listener = await loop.create_server(
                    self._protocol, sock=sock, backlog=128)
                if self.closed_for_good:    # closed while it opened
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
        self.closed_for_good = True
        self._close()
        if self._unused is not None:
            self._unused.close()
            self._unused = None
        self._gone.set()            # held requests end, unanswered
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
        if self.closed_for_good:
            return
        try:
            await asyncio.wait_for(self._gone.wait(), seconds)
        except asyncio.TimeoutError:
            pass


# -- the server -------------------------------------------------------------------

class MetadataServer:
    """Every endpoint, the replica they answer from, and the channel's
    messages; everything here runs in :attr:`events`' loop."""

    def __init__(self, link: socket.socket, hang_limit: float,
                 max_connections: int, stall_log: Path | None) -> None:
        self._link = link
        self.hang_limit = hang_limit
        self.max_connections = max_connections
        self.replica = MetadataReplica()
        self.events = serving.EventLoopThread("devcloud-metadata")
        self.loop = self.events.loop
        self.open_connections = 0       # every endpoint's, kept by the loop
        self.overloaded_answers = 0     # 503s for being full, since start
        #: (CLOCK_BOOTTIME start, seconds) of every stall, in the loop's order
        self.stalls: list[tuple[float, float]] = []
        self._stall_log = stall_log
        self._endpoints: dict[str, MetadataEndpoint] = {}
        self._reconciling: set[asyncio.Task] = set()
        self.done = threading.Event()

    def run(self) -> None:
        """Serve until the channel closes, then close every endpoint."""
        self.events.watch_stalls(STALL_SECONDS, self._stalled)
        self.events.call(lambda: self.loop.add_reader(self._link.fileno(),
                                                      self._readable))
        self.done.wait()
        try:
            self.events.call(self._close_all, timeout=2.0)
        finally:
            self.events.stop(timeout=2.0)

    # the channel

    def _readable(self) -> None:
        try:
            message, fds = channel.receive(self._link)
        except (channel.ChannelClosed, OSError):
            self.loop.remove_reader(self._link.fileno())
            self.done.set()
            return
        try:
            self._dispatch(message, fds)
        except Exception:
            LOG.exception("metadata server: cannot apply %s", message.get("op"))
            for fd in fds:
                socket.socket(fileno=fd).close()

    def _dispatch(self, message: dict, fds: list[int]) -> None:
        op = message["op"]
        if op == "server":
            self.replica.server_changed(message["id"], message["host"],
                                        channel.identity_from(message["identity"]))
        elif op == "gone":
            self.replica.server_deleted(message["id"])
            for key, endpoint in list(self._endpoints.items()):
                if endpoint.server_id == message["id"]:
                    self._unserve(key)
        elif op == "outage":
            outage = channel.outage_from(message["outage"])
            self.replica.outage_added(outage)
            if outage.kind is FaultKind.REFUSED:
                # closed at its start, reopened at its end
                self._reconcile_at(outage.server_id, outage.start)
                if outage.end is not None:
                    self._reconcile_at(outage.server_id, outage.end)
        elif op == "serve":
            self._serve(message, fds)
        elif op == "unserve":
            self._unserve(message["key"])
        elif op == "ask":
            self._reply(message)
        else:
            raise ValueError(f"unknown message {op!r}")

    def _serve(self, message: dict, fds: list[int]) -> None:
        sock = socket.socket(fileno=fds[0]) if fds else None
        endpoint = MetadataEndpoint(self, message["server"], sock,
                                    binder(message["bind"]), message["host"])
        self._unserve(message["key"])
        self._endpoints[message["key"]] = endpoint
        self._start_reconcile(endpoint)

    def _unserve(self, key: str) -> None:
        endpoint = self._endpoints.pop(key, None)
        if endpoint is not None:
            endpoint.close_for_good()

    def _reconcile_at(self, server_id: str, at: float) -> None:
        def reconcile() -> None:
            for endpoint in list(self._endpoints.values()):
                if endpoint.server_id == server_id:
                    self._start_reconcile(endpoint)
        self.loop.call_later(max(0.0, at - boottime.now()), reconcile)

    def _start_reconcile(self, endpoint: MetadataEndpoint) -> None:
        task = self.loop.create_task(endpoint.reconcile())
        self._reconciling.add(task)
        task.add_done_callback(self._reconciling.discard)

    def _reply(self, message: dict) -> None:
        """Answer a question once what came before it took effect (the
        listeners it opened or closed)."""
        async def reply() -> None:
            await asyncio.gather(*list(self._reconciling), return_exceptions=True)
            self._answer(message, self._answer_fields(message))
        self.loop.create_task(reply())

    def _answer_fields(self, message: dict) -> dict:
        question = message["question"]
        if question == "sync":
            return {}
        if question == "listening":
            endpoint = self._endpoints.get(message["key"])
            return {"listening": endpoint is not None and endpoint.listening}
        if question == "stats":
            return {"open_connections": self.open_connections,
                    "overloaded_answers": self.overloaded_answers,
                    "stalls": self.stalls}
        return {"error": f"unknown question {question!r}"}

    def _answer(self, message: dict, fields: dict) -> None:
        try:
            channel.send(self._link, {"reply": message["id"], **fields})
        except (channel.ChannelClosed, OSError):
            self.done.set()

    def _close_all(self) -> None:
        for key in list(self._endpoints):
            self._unserve(key)

    def _stalled(self, seconds: float) -> None:
        """The loop answered nothing for ``seconds``: a guest's probe that
        failed then measured this machine's overload, not the cloud model,
        so it is said (the log, and ``stall_log`` as JSON lines)."""
        start = boottime.now() - seconds
        LOG.warning("metadata service stalled for %.1f s: its process was short of CPU; "
                    "guests' probes in that time may fail on it", seconds)
        if self._stall_log is not None:
            with self._stall_log.open("a") as f:
                f.write(json.dumps({"start": round(start, 3),
                                    "seconds": round(seconds, 3)}) + "\n")
        self.stalls.append((start, seconds))

    # requests

    def full(self) -> bool:
        """Whether the open connections reached ``max_connections``."""
        return self.open_connections >= self.max_connections

    async def handle(self, endpoint: MetadataEndpoint,
                     request: web.BaseRequest) -> web.StreamResponse:
        view = self.replica.view(endpoint.server_id, boottime.now())
        # a process guest's endpoint is its own: it answers as whichever
        # host the server is on; a VM host's answers as that host
        host = endpoint.host or (view.host if view else "")
        result = answer(view, host, request.path)
        if result.action == "hang":
            await endpoint.held_until_gone(self.hang_limit)
        if result.action != "reply":
            return _dropped(request)
        payload = result.body.encode() if request.method != "HEAD" else b""
        # which host served it: handy when reading a failing run
        return web.Response(status=result.status, body=payload,
                            headers={"Content-Type": result.content_type,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rally-metadata-devcloud metadata server",
        description="Serve the devcloud's metadata endpoints (started by the devcloud).")
    parser.add_argument("--fd", type=int, required=True,
                        help="the channel's descriptor, inherited")
    parser.add_argument("--hang-limit", type=float, default=30.0)
    parser.add_argument("--max-connections", type=int,
                        default=limits.METADATA_CONNECTIONS)
    parser.add_argument("--stall-log", type=Path)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serving.raise_open_file_limit()
    link = socket.socket(fileno=args.fd)
    MetadataServer(link, args.hang_limit, args.max_connections, args.stall_log).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
