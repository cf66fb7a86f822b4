"""A small synchronous QMP client: JSON lines over QEMU's unix socket.

Why not ``qemu.qmp`` from PyPI: it is asyncio-based and the devcloud's
migration threads are plain threads; what they need (commands with replies,
and the events with QEMU's timestamps) fits in this module. A reader thread
splits what QEMU sends into replies (matched by ``id``) and events (kept,
with their timestamps, for :meth:`QmpClient.wait_event`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import socket
import threading
import time
from typing import Any, Callable


class QmpError(RuntimeError):
    """QEMU answered an error, or the monitor went away."""


@dataclasses.dataclass(frozen=True)
class QmpEvent:
    name: str
    data: dict
    #: QEMU's timestamp of the event (``CLOCK_REALTIME`` seconds)
    timestamp: float


class QmpClient:
    """One QMP connection (``connect`` retries until QEMU listens)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, dict] = {}
        self._events: list[QmpEvent] = []
        self._cond = threading.Condition()
        self._closed = False
        self._reader: threading.Thread | None = None

    def connect(self, timeout: float = 10.0,
                alive: Callable[[], bool] = lambda: True) -> "QmpClient":
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                break
            except OSError as error:
                sock.close()
                if time.monotonic() > deadline or not alive():
                    raise QmpError(f"QMP socket {self.path}: {error}") from error
                time.sleep(0.01)
        self._sock = sock
        stream = sock.makefile("rb")
        greeting = json.loads(stream.readline() or b"{}")
        if "QMP" not in greeting:
            raise QmpError(f"QMP socket {self.path}: no greeting")
        self._reader = threading.Thread(target=self._read, args=(stream,),
                                        name=f"qmp-{self.path[-24:]}",
                                        daemon=True)
        self._reader.start()
        self.execute("qmp_capabilities")
        return self

    def _read(self, stream) -> None:
        try:
            for line in stream:
                message = json.loads(line)
                with self._cond:
                    if "event" in message:
                        stamp = message.get("timestamp", {})
                        self._events.append(QmpEvent(
                            message["event"], message.get("data", {}),
                            stamp.get("seconds", 0)
                            + stamp.get("microseconds", 0) / 1e6))
                    elif "id" in message:
                        self._replies[message["id"]] = message
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def execute(self, command: str, timeout: float = 10.0,
                **arguments: Any) -> Any:
        """Run a command; its ``return`` value, or :class:`QmpError`."""
        if self._sock is None:
            raise QmpError("not connected")
        request_id = next(self._ids)
        request: dict = {"execute": command, "id": request_id}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as error:
            raise QmpError(f"{command}: {error}") from error
        deadline = time.monotonic() + timeout
        with self._cond:
            while request_id not in self._replies:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise QmpError(f"{command}: "
                                   f"{'QEMU went away' if self._closed else 'no reply'}")
                self._cond.wait(remaining)
            reply = self._replies.pop(request_id)
        if "error" in reply:
            raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def events(self, name: str | None = None,
               since: int = 0) -> list[QmpEvent]:
        with self._cond:
            return [e for e in self._events[since:]
                    if name is None or e.name == name]

    def mark(self) -> int:
        """A position in the event list, for :meth:`wait_event`'s ``since``."""
        with self._cond:
            return len(self._events)

    def wait_event(self, match: Callable[[QmpEvent], bool],
                   timeout: float, since: int = 0) -> QmpEvent | None:
        """The first event from position ``since`` on (received or to come)
        that ``match`` accepts; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events[since:]:
                    if match(event):
                        return event
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
