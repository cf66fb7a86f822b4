"""SSH adapter: each guest's sshd, bound to the guest's floating IP.

A server that is no longer building and has a floating IP listens on
``<floating ip>:<ssh_port>`` (floating IPs are loopback addresses, so this
needs no network setup). Only the server's keypair is accepted, for one user
name. Several channels may be opened per connection, as rally's sshutils
runs ``uname`` and then ``/bin/sh`` with a script on stdin over one
transport. Commands run in the guest (:mod:`.guests`); stdin is forwarded
until EOF, output is streamed, and the exit status is sent after the last
byte of output.

At a live migration's switchover a profile may make the floating IP's move
drop the packets of the guest's existing connections (``ssh_blackhole``):
the gateway then neither reads nor writes them, without FIN or RST, for a
while or for good, as a real network does, while new connections are
served. A guest reboot closes them.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import socket
import threading
import time

import paramiko
from paramiko.common import MSG_CHANNEL_FAILURE, MSG_CHANNEL_SUCCESS

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.guests import GuestManager
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.profiles import MigrationPlan

LOG = logging.getLogger(__name__)

# after the command exits, how long to wait for output still in the pipes;
# a detached child that kept stdout open must not hold the channel forever
DRAIN_SECONDS = 1.0


class _DroppableSocket(socket.socket):
    """An accepted connection whose packets can be dropped for a while.

    While dropped, ``recv`` and ``send`` wait instead of touching the
    kernel socket (what the client sent stays unread, nothing is sent, no
    FIN, no RST); they raise ``socket.timeout`` at the socket's timeout, as
    a quiet network does, so paramiko keeps checking whether it was closed.
    """

    def __init__(self, conn: socket.socket) -> None:
        super().__init__(conn.family, conn.type, conn.proto,
                         fileno=conn.detach())
        self._dropped_until = 0.0          # time.monotonic()
        self._changed = threading.Condition()

    def drop(self, seconds: float) -> None:
        """Drop every packet for ``seconds`` (``math.inf``: for good)."""
        with self._changed:
            self._dropped_until = time.monotonic() + seconds
            self._changed.notify_all()

    def close(self) -> None:
        super().close()
        with self._changed:
            self._changed.notify_all()

    def _wait_for_network(self) -> None:
        timeout = self.gettimeout()
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                if now >= self._dropped_until:
                    return
                if now >= deadline:
                    raise socket.timeout("timed out")
                wait = min(self._dropped_until, deadline) - now
                self._changed.wait(None if math.isinf(wait) else wait)

    def recv(self, *args, **kwargs) -> bytes:
        self._wait_for_network()
        return super().recv(*args, **kwargs)

    def send(self, *args, **kwargs) -> int:
        self._wait_for_network()
        return super().send(*args, **kwargs)


class _Transport(paramiko.Transport):
    """A server transport that says when a channel request was answered.

    paramiko sends the reply to an ``exec`` request only after
    ``check_channel_exec_request`` returns. A quick command could otherwise
    send its exit status and close the channel first, and the client's
    ``exec_command`` would fail with "Channel closed".
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._replies: dict[int, threading.Event] = {}
        self._replies_lock = threading.Lock()

    def reply_event(self, channel: paramiko.Channel) -> threading.Event:
        with self._replies_lock:
            return self._replies.setdefault(channel.remote_chanid,
                                            threading.Event())

    def _send_user_message(self, data) -> None:
        super()._send_user_message(data)
        raw = data.asbytes() if hasattr(data, "asbytes") else bytes(data)
        if len(raw) >= 5 and raw[0] in (MSG_CHANNEL_SUCCESS,
                                        MSG_CHANNEL_FAILURE):
            with self._replies_lock:
                event = self._replies.pop(int.from_bytes(raw[1:5], "big"),
                                          None)
            if event is not None:
                event.set()


class GuestSshServer(paramiko.ServerInterface):
    """paramiko's policy object for one connection to one guest."""

    def __init__(self, gateway: "SshGateway", server_id: str,
                 authorized: bytes | None) -> None:
        self._gateway = gateway
        self._server_id = server_id
        self._authorized = authorized

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if (username == self._gateway.user and self._authorized is not None
                and key.asbytes() == self._authorized):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, channel, term, width, height,
                                  pixelwidth, pixelheight, modes) -> bool:
        return True      # accepted and ignored: commands never get a tty

    def check_channel_exec_request(self, channel: paramiko.Channel,
                                   command: bytes) -> bool:
        return self._gateway.execute(self._server_id, channel,
                                     command.decode("utf-8", "replace"))

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        # a login shell reading commands from stdin
        return self._gateway.execute(self._server_id, channel, "exec sh")


class _Listener:
    """Accept loop of one guest address; one thread per connection."""

    def __init__(self, gateway: "SshGateway", server_id: str, address: str,
                 port: int, authorized: bytes | None) -> None:
        self.address = address
        self._gateway = gateway
        self._server_id = server_id
        self._authorized = authorized
        self._port = port
        self._stopped = threading.Event()
        self._connections: dict[paramiko.Transport, _DroppableSocket] = {}
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, self._port))
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._accept_loop, args=(sock,), daemon=True,
                         name=f"ssh-{self.address}").start()

    def _accept_loop(self, sock: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return           # closed by stop()
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"ssh-conn-{self.address}").start()

    def _serve(self, conn: socket.socket) -> None:
        sock = _DroppableSocket(conn)
        transport = _Transport(sock)
        transport.add_server_key(self._gateway.host_key)
        with self._lock:
            if self._stopped.is_set():
                transport.close()
                return
            self._connections[transport] = sock
        try:
            transport.start_server(server=GuestSshServer(
                self._gateway, self._server_id, self._authorized))
            # commands start from check_channel_exec_request; accepting here
            # drains paramiko's queue of opened channels, and the references
            # kept matter: a garbage-collected Channel closes itself
            channels: list[paramiko.Channel] = []
            while transport.is_active() and not self._stopped.is_set():
                channel = transport.accept(timeout=1)
                channels = [c for c in channels if not c.closed]
                if channel is not None:
                    channels.append(channel)
        except (paramiko.SSHException, EOFError, OSError) as e:
            LOG.debug("ssh %s: connection ended: %s", self.address, e)
        finally:
            transport.close()
            with self._lock:
                self._connections.pop(transport, None)

    def drop_connections(self, seconds: float) -> int:
        """Drop the packets of every open connection for ``seconds``
        (``math.inf``: for good); returns how many there were."""
        with self._lock:
            sockets = list(self._connections.values())
        for sock in sockets:
            sock.drop(seconds)
        return len(sockets)

    def close_connections(self) -> int:
        """Close every open connection; returns how many there were."""
        with self._lock:
            transports = list(self._connections)
        for transport in transports:
            transport.close()
        return len(transports)

    def refuse_connections(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (new connections are refused, open
        ones are left alone), then listen again: the address is off the
        network."""
        with self._lock:
            if self._stopped.is_set() or self._sock is None:
                return
            _close_listening(self._sock)
            self._sock = None
        timer = threading.Timer(seconds, self._listen_again)
        timer.daemon = True
        timer.start()

    def _listen_again(self) -> None:
        with self._lock:
            if self._stopped.is_set() or self._sock is not None:
                return
            try:
                self._listen()
            except OSError as e:
                LOG.error("ssh %s: cannot listen again: %s", self.address, e)

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            sock, self._sock = self._sock, None
        if sock is not None:
            _close_listening(sock)
        self.close_connections()


def _close_listening(sock: socket.socket) -> None:
    """Close a listening socket, waking the thread blocked in its accept()."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class SshGateway:
    """Keeps one SSH listener per (server, floating IP) as the model says.

    Implements :class:`~.model.backend.CloudListener` and the migration
    engine's :class:`~.migration_engine.SwitchoverEffect` (SSH blackhole,
    connections of a rebooted guest).
    """

    def __init__(self, backend: CloudBackend, guests: GuestManager,
                 host_key: paramiko.PKey, port: int, user: str) -> None:
        self._backend = backend
        self._guests = guests
        self.host_key = host_key
        self.port = port
        self.user = user
        self._listeners: dict[str, dict[str, _Listener]] = {}
        self._lock = threading.Lock()

    def execute(self, server_id: str, channel: paramiko.Channel,
                command: str) -> bool:
        guest = self._guests.guest(server_id)
        if guest is None:
            return False
        replied = channel.get_transport().reply_event(channel)
        threading.Thread(target=_run_command,
                         args=(guest, channel, command, replied),
                         daemon=True, name="ssh-exec").start()
        return True

    def _authorized_key(self, server: Server) -> bytes | None:
        """The keypair's public key as the guest saw it at first boot (the
        keypair may be deleted later; authorized_keys stays)."""
        for public in self._backend.compute.public_keys(server).values():
            return base64.b64decode(public.split()[1])
        return None

    def _reconcile(self, server: Server) -> None:
        wanted = (set(self._backend.l3.server_floating_ips(server.id))
                  if server.status != "BUILD" else set())
        with self._lock:
            current = self._listeners.setdefault(server.id, {})
            for address in set(current) - wanted:
                current.pop(address).stop()
            authorized = None
            for address in sorted(wanted - set(current)):
                if authorized is None:
                    authorized = self._authorized_key(server)
                try:
                    current[address] = _Listener(self, server.id, address,
                                                 self.port, authorized)
                except OSError as e:
                    LOG.error("guest %s: cannot listen on %s:%s: %s",
                              server.id, address, self.port, e)

    def server_changed(self, server: Server) -> None:
        self._reconcile(server)

    def server_deleted(self, server: Server) -> None:
        with self._lock:
            listeners = self._listeners.pop(server.id, {})
        for listener in listeners.values():
            listener.stop()

    def outage_added(self, outage) -> None:
        pass

    def switched_over(self, server_id: str, plan: MigrationPlan) -> dict:
        """Close the connections of a rebooted guest; else drop the packets
        of the existing ones for the plan's ``ssh_blackhole``."""
        with self._lock:
            listeners = list(self._listeners.get(server_id, {}).values())
        if plan.guest_reboot:
            for listener in listeners:
                listener.close_connections()
            return {}
        if plan.ssh_blackhole is None:
            return {}
        start = boottime.now()
        dropped = sum(listener.drop_connections(plan.ssh_blackhole)
                      for listener in listeners)
        LOG.info("guest %s: %d SSH connections dropped for %s s", server_id,
                 dropped, plan.ssh_blackhole)
        end = (None if math.isinf(plan.ssh_blackhole)
               else start + plan.ssh_blackhole)
        return {"ssh_blackhole_start": start, "ssh_blackhole_end": end,
                "ssh_blackhole_connections": dropped}

    def refuse_connections(self, server_id: str, seconds: float) -> int:
        """The server's floating IPs refuse new connections for ``seconds``;
        returns how many addresses stopped listening."""
        with self._lock:
            listeners = list(self._listeners.get(server_id, {}).values())
        for listener in listeners:
            listener.refuse_connections(seconds)
        return len(listeners)

    def stop(self) -> None:
        with self._lock:
            every = [l for ls in self._listeners.values() for l in ls.values()]
            self._listeners.clear()
        for listener in every:
            listener.stop()


def _run_command(guest, channel: paramiko.Channel, command: str,
                 replied: threading.Event) -> None:
    replied.wait(timeout=2)
    try:
        proc = guest.spawn(command)
    except OSError as e:
        channel.sendall_stderr(f"sh: {e}\n".encode())
        channel.send_exit_status(127)
        channel.close()
        return

    def pump_stdin() -> None:
        try:
            while True:
                data = channel.recv(32768)
                if not data:          # EOF (shutdown_write) or closed
                    break
                proc.stdin.write(data)
        except OSError:
            pass                      # the command exited without reading
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def pump(fd: int, send) -> None:
        try:
            while True:
                data = os.read(fd, 32768)
                if not data:
                    break
                send(data)
        except OSError:
            pass

    threading.Thread(target=pump_stdin, daemon=True).start()
    pumps = [threading.Thread(target=pump, args=(proc.stdout.fileno(),
                                                 channel.sendall), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr.fileno(),
                                                 channel.sendall_stderr),
                              daemon=True)]
    for thread in pumps:
        thread.start()
    status = proc.wait()
    for thread in pumps:
        thread.join(DRAIN_SECONDS)
    try:
        # after the output: rally's client stops reading at the exit status
        channel.send_exit_status(status if status >= 0 else 128 - status)
        channel.shutdown_write()
        channel.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        # close only drained pipes: closing an fd another thread still reads
        # would let the number be reused under it
        for stream, thread in zip((proc.stdout, proc.stderr), pumps):
            if not thread.is_alive():
                stream.close()
