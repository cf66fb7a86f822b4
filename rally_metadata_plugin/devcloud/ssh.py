"""SSH adapter: each guest's sshd, bound to the guest's floating IP.

A server that is no longer building and has a floating IP listens on
``<floating ip>:<ssh_port>`` (floating IPs are loopback addresses, so this
needs no network setup). Only the server's keypair is accepted, for one user
name. Several channels may be opened per connection, as rally's sshutils
runs ``uname`` and then ``/bin/sh`` with a script on stdin over one
transport. Commands run in the guest (:mod:`.guests`); stdin is forwarded
until EOF, output is streamed, and the exit status is sent after the last
byte of output.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading

import paramiko
from paramiko.common import MSG_CHANNEL_FAILURE, MSG_CHANNEL_SUCCESS

from rally_metadata_plugin.devcloud.guests import GuestManager
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server

LOG = logging.getLogger(__name__)

# after the command exits, how long to wait for output still in the pipes;
# a detached child that kept stdout open must not hold the channel forever
DRAIN_SECONDS = 1.0


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
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((address, port))
        self._sock.listen(16)
        self._stopped = threading.Event()
        self._transports: set[paramiko.Transport] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True,
                         name=f"ssh-{address}").start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return           # closed by stop()
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"ssh-conn-{self.address}").start()

    def _serve(self, conn: socket.socket) -> None:
        transport = _Transport(conn)
        transport.add_server_key(self._gateway.host_key)
        with self._lock:
            if self._stopped.is_set():
                transport.close()
                return
            self._transports.add(transport)
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
                self._transports.discard(transport)

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.close()


class SshGateway:
    """Keeps one SSH listener per (server, floating IP) as the model says.

    Implements :class:`~.model.backend.CloudListener`.
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
