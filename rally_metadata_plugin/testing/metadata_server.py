"""A fake metadata service with fault injection, and the truth it records.

:class:`MetadataServer` is a small threaded HTTP server that answers every
request with a fixed body (the expected text) and can inject any
:class:`~rally_metadata_plugin.core.faults.FaultKind`, ``drop`` included
when it listens inside a :class:`~.netns.NetNS`.  Every fault edge is
timestamped on ``CLOCK_BOOTTIME`` (:mod:`rally_metadata_plugin.devcloud.boottime`,
the clock ``/proc/uptime`` shows), so the truth (:class:`TrueOutage`) is
directly comparable with the meter's timestamps; :func:`match_outages` pairs
the truth with the outages the log analysis found.

Unlike the devcloud's metadata service (:mod:`rally_metadata_plugin.devcloud.metadata`),
which applies outages a migration profile scheduled, faults here are switched
on and off by the caller, at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http
import random
import socket
import threading
import time
from typing import Iterable, Optional, Sequence, Union

from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.core.probe_script import METADATA_HOST
from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.testing.netns import NetNS

HOSTNAME_PATH = "/latest/meta-data/hostname"


@dataclasses.dataclass(frozen=True)
class Edge:
    """A fault edge on CLOCK_BOOTTIME; it took effect within ``time +/- error``."""

    time: float
    error: float


def _pick_port() -> int:
    # Outside the usual ephemeral range (32768-60999) so that no client socket
    # can take the port while the listener is closed for a 'refused' outage.
    return random.randrange(20000, 32000)


def _timed(change) -> Edge:
    """Run ``change()``; the edge is the middle of the clock readings around it."""
    before = boottime.now()
    change()
    after = boottime.now()
    return Edge((before + after) / 2, (after - before) / 2)


class MetadataServer:
    """A threaded HTTP server with injectable faults; see the module docstring."""

    def __init__(self, body: str, host: str = "127.0.0.1", port: Optional[int] = None,
                 netns: Optional[NetNS] = None, other_body: str = "other-instance-0000\n"):
        self.body = body
        self.other_body = other_body
        self.host = host
        self.netns = netns
        self.port = port
        #: The fault applied to requests as they arrive (None: answer normally).
        self.mode: Optional[FaultKind] = None
        self.requests = 0
        #: Called with no argument when a complete request arrives (tests hook it).
        self.on_request = None
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._conns: set[socket.socket] = set()
        self._closed = False

    # lifecycle
    def __enter__(self) -> "MetadataServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_listener(self) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            return sock

        return self.netns.call_inside(make) if self.netns else make()

    def start(self) -> None:
        if self.port is not None:
            self._open()
            return
        for _ in range(50):
            self.port = _pick_port()
            try:
                self._open()
                return
            except OSError:
                continue
        raise RuntimeError("no free port")

    def _open(self) -> None:
        listener = self._new_listener()
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); new SYNs get RST
            listener.close()

    def close(self) -> None:
        self._closed = True
        self._close_listener()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def url(self, path: str = HOSTNAME_PATH) -> str:
        host = METADATA_HOST if self.host == METADATA_HOST and self.port == 80 else \
            f"{self.host}:{self.port}"
        return f"http://{host}{path}"

    # serving
    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            mode = self.mode  # the state when the request arrived decides
            with self._lock:
                self.requests += 1
            if self.on_request is not None:
                self.on_request()
            if mode is FaultKind.HANG:
                conn.settimeout(None)
                while conn.recv(4096):  # until the client gives up (or close())
                    pass
                return
            if mode is not None and mode.http_status is not None:
                phrase = http.HTTPStatus(mode.http_status).phrase
                status, body = f"{mode.http_status} {phrase}", f"{phrase.lower()}\n"
            elif mode is FaultKind.WRONG_INSTANCE:
                status, body = "200 OK", self.other_body
            else:
                status, body = "200 OK", self.body
            payload = body.encode()
            conn.sendall(
                f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
            )
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    # faults
    def _drop_rule(self, action: str) -> None:
        self.netns.iptables(action, "INPUT", "-p", "tcp", "--dport", str(self.port),
                            "-j", "DROP")

    def set_fault(self, kind: Union[FaultKind, str]) -> Edge:
        """Start a fault; returns when (on CLOCK_BOOTTIME) it took effect.

        :raises ValueError: ``kind`` is no :class:`FaultKind`.
        """
        kind = FaultKind(kind)
        if kind.needs_netns and self.netns is None:
            raise RuntimeError(f"the {kind} fault needs a network namespace")
        if kind is FaultKind.REFUSED:
            return _timed(self._close_listener)
        if kind is FaultKind.DROP:
            return _timed(lambda: self._drop_rule("-I"))
        return _timed(lambda: setattr(self, "mode", kind))

    def clear_fault(self, kind: Union[FaultKind, str]) -> Edge:
        """End a fault started with :meth:`set_fault`."""
        kind = FaultKind(kind)
        if kind is FaultKind.REFUSED:
            return _timed(self._open)
        if kind is FaultKind.DROP:
            return _timed(lambda: self._drop_rule("-D"))
        return _timed(lambda: setattr(self, "mode", None))


@dataclasses.dataclass(frozen=True)
class TrueOutage:
    """An injected fault as it really happened (the truth a meter is judged by)."""

    kind: FaultKind
    start: Edge
    end: Optional[Edge]  # None: still going on

    @property
    def duration(self) -> float:
        end = self.end.time if self.end else boottime.now()
        return end - self.start.time

    @property
    def error(self) -> float:
        return self.start.error + (self.end.error if self.end else 0.0)


def inject(server: MetadataServer, kind: Union[FaultKind, str], duration: float) -> TrueOutage:
    """One fault of ``duration`` seconds (sleeping through it)."""
    kind = FaultKind(kind)
    start = server.set_fault(kind)
    time.sleep(max(0.0, start.time + duration - boottime.now()))
    end = server.clear_fault(kind)
    return TrueOutage(kind, start, end)


def run_schedule(server: MetadataServer,
                 schedule: Iterable[tuple[float, Union[FaultKind, str], float]]
                 ) -> list[TrueOutage]:
    """``schedule``: (healthy seconds before, kind, outage seconds) triples."""
    truth = []
    for gap, kind, duration in schedule:
        time.sleep(gap)
        truth.append(inject(server, kind, duration))
    return truth


def match_outages(truth: Sequence[TrueOutage], found: Sequence[analysis.Outage],
                  slack: float = 0.3) -> list[Optional[analysis.Outage]]:
    """For each true outage, the found outage overlapping it most (None if none)."""
    result = []
    for true in truth:
        lo = true.start.time - slack
        hi = (true.end.time if true.end else float("inf")) + slack
        best, best_overlap = None, 0.0
        for outage in found:
            overlap = min(outage.end, hi) - max(outage.start, lo)
            if overlap > best_overlap or (best is None and overlap >= 0
                                          and outage.start <= hi and outage.end >= lo):
                best, best_overlap = outage, overlap
        result.append(best)
    return result
