"""The metadata service, as each guest reaches it.

A guest's ``http_proxy`` points at its own endpoint, ``127.0.0.1:<port>``,
allocated at boot and stable for the server's lifetime (a running meter keeps
its environment across migrations). Requests for ``http://169.254.169.254/...``
therefore arrive in absolute form; aiohttp turns them into an ordinary
path. Direct requests (``GET /latest/...``) are served the same. The VM
guests' hosts (:mod:`.vm.metadata`) have a listener per guest instead.

Every endpoint is served by one asyncio event loop in a process of its own,
:mod:`.metadata_server`, however many guests and held connections there are;
past ``METADATA_CONNECTIONS`` open connections (:mod:`.limits`) a new one is
answered 503. :class:`MetadataService` is the devcloud's side of it: it
tells the server process what the model decides. This module also has what
both sides share: the documents, and :func:`answer`.

Each request is answered as served by the server's *current* host, applying
the fault state at the instant it arrived (see
:class:`~.model.outages.MetadataReplica`); the kinds are those of
:class:`~rally_metadata_plugin.core.faults.FaultKind` but ``drop``:

* ``refused``: the endpoint's listening socket is closed for the outage, so
  connects fail with ECONNREFUSED; it is reopened on the same port after.
* ``hang``: accepted, never answered; held (a descriptor, no thread) until
  the client gives up (or ``hang_limit`` seconds), then dropped.
* ``http_500`` / ``http_503``: that status.
* ``wrong_instance``: 200 with another instance's metadata.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterable

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import cgroups, limits, metadata_channel
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.outages import (
    InstanceIdentity, MetadataView, Outage)

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
#: The state directory's file of stalls (see :meth:`.metadata_server.MetadataServer._stalled`).
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



# -- the devcloud's side ------------------------------------------------------------

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


class MetadataService:
    """The devcloud's side of the metadata server process; implements
    :class:`~.model.backend.CloudListener` for the process guests.

    It starts :mod:`.metadata_server` and tells it, over a
    :mod:`.metadata_channel`, everything a request's answer depends on: each
    server's host and identity when it changes, each outage when it is
    scheduled, and which endpoints to serve. Nothing here waits for the
    server process but :meth:`sync` and the questions (:meth:`listening`,
    :meth:`stats`): API threads call in with the model's changes and must
    not stall on a loaded metadata service.
    """

    def __init__(self, backend: CloudBackend, hang_limit: float = 30.0,
                 max_connections: int = limits.METADATA_CONNECTIONS,
                 stall_log: Path | None = None,
                 start_timeout: float = 30.0) -> None:
        self.backend = backend
        self._pool = _PortPool()
        self._ports: dict[str, int] = {}       # process guests' endpoints
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._questions: dict[int, concurrent.futures.Future] = {}
        self._next_question = itertools.count(1)
        self._stopping = False
        self._link, theirs = metadata_channel.pair()
        command = [sys.executable, "-m", "rally_metadata_plugin.devcloud.metadata_server",
                   "--fd", str(theirs.fileno()), "--hang-limit", str(hang_limit),
                   "--max-connections", str(max_connections),
                   "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel())]
        if stall_log is not None:
            command += ["--stall-log", str(stall_log)]
        with theirs:
            # its own session: a Ctrl-C meant for the devcloud must not kill
            # it before the devcloud's orderly stop; the channel's end, not a
            # signal, tells it to go
            self._process = subprocess.Popen(command, pass_fds=[theirs.fileno()],
                                             stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        # the service the guests measure gets the CPU first (see .cgroups)
        self.cpu_group = cgroups.cpu_group("the metadata server",
                                            cgroups.METADATA_SHARES)
        if self.cpu_group is not None:
            self.cpu_group.add(self._process.pid)
        self._reader = threading.Thread(target=self._read_answers,
                                        name="devcloud-metadata-link", daemon=True)
        self._reader.start()
        try:
            self.sync(start_timeout)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"the metadata server process did not start: {e!r}") from e

    @property
    def pid(self) -> int:
        return self._process.pid

    # what the server process is told

    def _tell(self, message: dict, fds: tuple[int, ...] = ()) -> None:
        with self._send_lock:
            try:
                metadata_channel.send(self._link, message, fds)
            except (metadata_channel.ChannelClosed, OSError) as e:
                if not self._stopping:
                    LOG.error("metadata server process unreachable (%s): guests get "
                              "no metadata changes", e)

    def update_server(self, server: Server) -> None:
        """Tell the server process the server's host and identity."""
        identity = self.backend.migrations.instance_identity(server)
        self._tell({"op": "server", "id": server.id, "host": server.host,
                    "identity": metadata_channel.identity_fields(identity)})

    def forget_server(self, server_id: str) -> None:
        """The server is gone: so are its endpoints and outages."""
        self._tell({"op": "gone", "id": server_id})

    def serve(self, key: str, server_id: str, host: str | None, bind: dict,
              sock: socket.socket | None = None) -> None:
        """Serve ``server_id`` (as ``host``, or its current host if None) on
        listening sockets the server process makes as ``bind`` says (see
        :func:`.metadata_server.binder`), starting with ``sock`` if given;
        opened soon unless refused. Replaces what ``key`` served."""
        fds = (sock.fileno(),) if sock is not None else ()
        self._tell({"op": "serve", "key": key, "server": server_id,
                    "host": host, "bind": bind}, fds)

    def unserve(self, key: str) -> None:
        self._tell({"op": "unserve", "key": key})

    # the process guests' endpoints

    def url(self, server_id: str) -> str:
        """The process guest's endpoint, created on first use."""
        with self._lock:
            port = self._ports.get(server_id)
            if port is not None:
                return f"http://127.0.0.1:{port}"
            with self._pool.bind() as sock:     # ours closes once sent
                port = sock.getsockname()[1]
                self._ports[server_id] = port
                self.serve(server_id, server_id, None, {"port": port}, sock)
        return f"http://127.0.0.1:{port}"

    # CloudListener

    def server_changed(self, server: Server) -> None:
        self.update_server(server)
        self.url(server.id)

    def server_deleted(self, server: Server) -> None:
        self.forget_server(server.id)
        with self._lock:
            port = self._ports.pop(server.id, None)
        if port is not None:
            self._pool.release(port)

    def outage_added(self, outage: Outage) -> None:
        """Tell the server process a scheduled outage; it closes and reopens
        the server's endpoints for a ``refused`` one itself, on time."""
        self._tell({"op": "outage",
                    "outage": metadata_channel.outage_fields(outage)})

    # questions

    def _ask(self, question: str, timeout: float = 10.0, **fields) -> dict:
        future: concurrent.futures.Future = concurrent.futures.Future()
        number = next(self._next_question)
        self._questions[number] = future
        try:
            self._tell({"op": "ask", "id": number, "question": question, **fields})
            return future.result(timeout)
        finally:
            self._questions.pop(number, None)

    def _read_answers(self) -> None:
        while True:
            try:
                message, fds = metadata_channel.receive(self._link)
            except (metadata_channel.ChannelClosed, OSError):
                break
            for fd in fds:
                os.close(fd)
            future = self._questions.get(message.get("reply"))
            if future is not None and not future.done():
                message.pop("reply")
                future.set_result(message)
        for future in list(self._questions.values()):
            if not future.done():
                future.set_exception(metadata_channel.ChannelClosed(
                    "the metadata server process is gone"))
        if not self._stopping:
            LOG.error("the metadata server process exited (status %s): guests get no "
                      "metadata from now on", self._process.poll())

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until everything told so far took effect in the server process
        (listeners opened or closed)."""
        self._ask("sync", timeout)

    def listening(self, key: str) -> bool:
        """Whether ``key``'s endpoint listens now (after :meth:`sync`)."""
        return bool(self._ask("listening", key=key)["listening"])

    def stats(self) -> dict:
        """``open_connections``, ``overloaded_answers`` (503s for being full)
        and ``stalls`` (``[CLOCK_BOOTTIME start, seconds]`` each)."""
        return self._ask("stats")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server process (it closes every endpoint). Idempotent."""
        self._stopping = True
        try:
            self._link.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            LOG.warning("metadata server process %d did not stop in %.0f s: killed",
                        self._process.pid, timeout)
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout)
        self._link.close()
        if self.cpu_group is not None and self.cpu_group.remove():
            self.cpu_group = None
