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

Threads are bounded (:mod:`.limits`): one acceptor thread for every
listener; per open connection, paramiko's transport thread (at most
``SSH_CONNECTIONS``, past which the acceptor stops accepting); per running
command, one thread that copies its stdin and output (at most
``SSH_COMMANDS``, past which an exec request waits, then is refused). A
connection closed before its client said a word (a TCP-connect probe) never
gets a transport.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import selectors
import socket
import threading
import time

import paramiko
from paramiko.common import MSG_CHANNEL_FAILURE, MSG_CHANNEL_SUCCESS

from rally_metadata_plugin.devcloud import boottime, limits
from rally_metadata_plugin.devcloud.guests import GuestManager
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.profiles import MigrationPlan

LOG = logging.getLogger(__name__)

#: How long an accepted connection may stay silent before paramiko takes it.
WAIT_FOR_CLIENT = 1.0
# after the command exits, how long to wait for output still in the pipes;
# a detached child that kept stdout open must not hold the channel forever
DRAIN_SECONDS = 1.0
#: How often an idle connection's thread wakes to see whether it was closed.
IDLE_CHECK_SECONDS = 1.0

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
        # wakes the transport's thread if it is blocked reading (a close
        # alone would leave it there until its socket timeout)
        try:
            self.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
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

    An idle transport's thread wakes every ``_active_check_timeout`` seconds
    (paramiko's 0.1 s) only to see whether it was closed: with hundreds of
    connections that is thousands of wake-ups a second, each taking the GIL
    from the metadata service's event loop. Once a second is enough: a
    close shuts the socket down, which wakes the thread at once.
    """

    _active_check_timeout = IDLE_CHECK_SECONDS

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._replies: dict[int, threading.Event] = {}
        self._replies_lock = threading.Lock()
        self._kept_channels: list[paramiko.Channel] = []

    def keep_opened_channels(self) -> None:
        """Move the channels paramiko queued for ``accept()`` to a list of
        our own, forgetting closed ones (a garbage-collected Channel closes
        itself, so an opened one must stay referenced until it is done)."""
        opened = []
        while (channel := self.accept(timeout=0)) is not None:
            opened.append(channel)
        with self._replies_lock:
            self._kept_channels = [c for c in self._kept_channels + opened
                              if not c.closed]

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
    """One guest address's listening socket and the connections it took.

    Connections are accepted by the gateway's single :class:`_Acceptor`
    thread; each then lives in its paramiko transport's own thread.
    """

    def __init__(self, gateway: "SshGateway", server_id: str, address: str,
                 port: int, authorized: bytes | None) -> None:
        self.address = address
        self._gateway = gateway
        self._server_id = server_id
        self._authorized = authorized
        self._port = port
        self._stopped = False
        self._connections: dict[paramiko.Transport, _DroppableSocket] = {}
        self._lock = threading.Lock()
        self.sock: socket.socket | None = self._bind()

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.address, self._port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def serve(self, conn: socket.socket) -> None:
        """Start the SSH server side of an accepted connection (the
        handshake and everything after run in the transport's thread)."""
        conn.setblocking(True)
        # as sshd does: SSH sends several small packets in a row (a
        # channel's reply, its data, EOF, exit status), and with Nagle each
        # waited for the client's delayed ACK: 40 ms, twice per command
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = _DroppableSocket(conn)
        transport = _Transport(sock)
        transport.add_server_key(self._gateway.host_key)
        try:
            transport.start_server(
                event=threading.Event(),   # do not wait for the handshake
                server=GuestSshServer(self._gateway, self._server_id,
                                      self._authorized))
        except (paramiko.SSHException, EOFError, OSError) as e:
            LOG.debug("ssh %s: connection ended: %s", self.address, e)
            transport.close()
            return
        # known once active: _open() forgets inactive transports
        with self._lock:
            if not self._stopped:
                self._connections[transport] = sock
                return
        transport.close()

    def _open(self) -> dict[paramiko.Transport, _DroppableSocket]:
        """The open connections (under the lock); ended ones are forgotten."""
        for transport in [t for t in self._connections
                          if not (t.is_active() and t.is_alive())]:
            transport.close()
            del self._connections[transport]
        return self._connections

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open())

    def drop_connections(self, seconds: float) -> int:
        """Drop the packets of every open connection for ``seconds``
        (``math.inf``: for good); returns how many there were."""
        with self._lock:
            sockets = list(self._open().values())
        for sock in sockets:
            sock.drop(seconds)
        return len(sockets)

    def close_connections(self) -> int:
        """Close every open connection; returns how many there were."""
        with self._lock:
            transports = list(self._open())
            self._connections.clear()
        for transport in transports:
            transport.close()
        return len(transports)

    def refuse_connections(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (new connections are refused, open
        ones are left alone), then listen again: the address is off the
        network."""
        with self._lock:
            if self._stopped or self.sock is None:
                return
            sock, self.sock = self.sock, None
        self._gateway.acceptor.remove(sock)
        timer = threading.Timer(seconds, self._listen_again)
        timer.daemon = True
        timer.start()

    def _listen_again(self) -> None:
        with self._lock:
            if self._stopped or self.sock is not None:
                return
            try:
                self.sock = self._bind()
            except OSError as e:
                LOG.error("ssh %s: cannot listen again: %s", self.address, e)
                return
            self._gateway.acceptor.add(self, self.sock)

    def stop(self) -> None:
        """Close the listening socket (the acceptor forgets it) and every
        connection."""
        with self._lock:
            self._stopped = True
            sock, self.sock = self.sock, None
        if sock is not None:
            self._gateway.acceptor.remove(sock)
        self.close_connections()


class _Acceptor:
    """The one thread that accepts SSH connections, for every guest.

    At ``max_connections`` open connections it stops accepting until some
    close: new clients then wait in the listen backlog, as with an sshd at
    its ``MaxStartups``, and get through once the load goes away.
    """

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._selector = selectors.DefaultSelector()
        # listening socket -> its listener (the loop's own; others queue
        # changes)
        self._listening: dict[socket.socket, _Listener] = {}
        self._changes: list[tuple[socket.socket, _Listener | None]] = []
        # accepted, not yet handed to paramiko: connection -> (listener,
        # deadline)
        self._waiting: dict[socket.socket, tuple[_Listener, float]] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopped = False
        self.full_since: float | None = None    # time.monotonic(), or None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="ssh-acceptor")
        self._thread.start()

    def add(self, listener: _Listener, sock: socket.socket) -> None:
        """Accept connections on ``sock`` (listening) for ``listener``."""
        self._change(sock, listener)

    def remove(self, sock: socket.socket) -> None:
        """Stop accepting on ``sock`` and close it.

        New connects are refused from the moment this returns: the socket
        is shut down here, and closed by the acceptor's thread, which owns
        the selector it is registered with.
        """
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._change(sock, None)

    def _change(self, sock: socket.socket, listener: _Listener | None) -> None:
        with self._lock:
            if not self._stopped:
                self._changes.append((sock, listener))
                sock = None
        if sock is not None:
            _close_listening(sock)
        else:
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def open_connections(self) -> int:
        return len(self._waiting) + sum(
            listener.open_connections()
            for listener in set(self._listening.values()))

    def _apply_changes(self) -> None:
        with self._lock:
            changes, self._changes = self._changes, []
        for sock, listener in changes:
            if listener is not None:
                self._selector.register(sock, selectors.EVENT_READ, listener)
                self._listening[sock] = listener
            else:
                if self._listening.pop(sock, None) is not None:
                    self._selector.unregister(sock)
                _close_listening(sock)

    def _run(self) -> None:
        while True:
            self._apply_changes()
            if self._stopped:
                break
            full = self.open_connections() >= self.max_connections
            if full and self.full_since is None:
                LOG.warning("ssh: %d connections open, not accepting more "
                            "until some close", self.max_connections)
                self.full_since = time.monotonic()
            elif not full:
                self.full_since = None
            # when full, only wake-ups and a periodic recount: the
            # listeners' backlogs hold the waiting clients
            ready = self._selector.select(timeout=self._timeout())
            for key, _ in ready:
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                elif key.fileobj in self._waiting:
                    self._first_bytes(key.fileobj)
                elif not full:
                    self._accept(key.fileobj)
            now = time.monotonic()
            for conn, (_, deadline) in list(self._waiting.items()):
                if now >= deadline:
                    self._hand_over(conn)
            if full:
                time.sleep(0.05)
        for sock in self._listening:
            _close_listening(sock)
        self._listening.clear()
        for conn in self._waiting:
            conn.close()
        self._waiting.clear()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept(self, sock: socket.socket) -> None:
        """Accept one connection; it waits for its client's first bytes.

        A client speaks first (its identification string), so a connection
        that closes before saying anything (a TCP-connect probe of the
        network meter) is closed here and costs no paramiko transport and
        no thread. A client still silent after WAIT_FOR_CLIENT seconds gets
        paramiko all the same.
        """
        listener = self._listening[sock]
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            LOG.debug("ssh %s: accept failed: %s", listener.address, e)
            return
        self._waiting[conn] = (listener, time.monotonic() + WAIT_FOR_CLIENT)
        self._selector.register(conn, selectors.EVENT_READ, listener)

    def _timeout(self) -> float:
        if not self._waiting:
            return 0.5
        first = min(deadline for _, deadline in self._waiting.values())
        return max(0.0, min(0.5, first - time.monotonic()))

    def _first_bytes(self, conn: socket.socket) -> None:
        try:
            said = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            said = b""
        if said:
            self._hand_over(conn)
        else:                       # closed without a word
            self._selector.unregister(conn)
            del self._waiting[conn]
            conn.close()

    def _hand_over(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        listener, _ = self._waiting.pop(conn)
        listener.serve(conn)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake()
        self._thread.join(timeout=5)


def _close_listening(sock: socket.socket) -> None:
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
                 host_key: paramiko.PKey, port: int, user: str,
                 max_connections: int = limits.SSH_CONNECTIONS,
                 max_commands: int = limits.SSH_COMMANDS) -> None:
        self._backend = backend
        self._guests = guests
        self.host_key = host_key
        self.port = port
        self.user = user
        self._listeners: dict[str, dict[str, _Listener]] = {}
        self._lock = threading.Lock()
        self.acceptor = _Acceptor(max_connections)
        self.max_commands = max_commands
        self._command_slots = threading.BoundedSemaphore(max_commands)

    def execute(self, server_id: str, channel: paramiko.Channel,
                command: str) -> bool:
        """Start ``command`` for an ``exec`` request (in the transport's
        thread); False refuses the request."""
        guest = self._guests.guest(server_id)
        if guest is None:
            return False
        transport = channel.get_transport()
        transport.keep_opened_channels()
        # a full gateway answers slowly, then refuses; it never starts a
        # thread past its bound
        if not self._command_slots.acquire(timeout=limits.SSH_COMMAND_SLOT_WAIT):
            LOG.warning("guest %s: %d commands running, exec refused",
                        server_id, self.max_commands)
            return False
        replied = transport.reply_event(channel)
        try:
            threading.Thread(target=self._command, daemon=True,
                             name="ssh-exec",
                             args=(guest, channel, command, replied)).start()
        except RuntimeError:
            self._command_slots.release()
            raise
        return True

    def _command(self, guest, channel: paramiko.Channel, command: str,
                 replied: threading.Event) -> None:
        try:
            _run_command(guest, channel, command, replied)
        finally:
            self._command_slots.release()

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
                    listener = _Listener(self, server.id, address, self.port,
                                         authorized)
                    self.acceptor.add(listener, listener.sock)
                    current[address] = listener
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
        self.acceptor.stop()


def _run_command(guest, channel: paramiko.Channel, command: str,
                 replied: threading.Event) -> None:
    """Run one command in the guest, in one thread: its stdin from the
    channel, its stdout and stderr to it, then its exit status."""
    replied.wait(timeout=2)
    try:
        proc = guest.spawn(command)
    except OSError as e:
        try:
            channel.sendall_stderr(f"sh: {e}\n".encode())
            channel.send_exit_status(127)
            channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        return
    try:
        _pump(proc, channel)
        status = proc.wait()
        # after the output: rally's client stops reading at the exit status
        channel.send_exit_status(status if status >= 0 else 128 - status)
        channel.shutdown_write()
        channel.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


def _pump(proc, channel: paramiko.Channel) -> None:
    """Copy channel -> stdin and stdout/stderr -> channel until the command
    has exited and its output is drained (or DRAIN_SECONDS after its exit,
    for a detached child that kept the pipes open)."""
    selector = selectors.DefaultSelector()
    stdin = proc.stdin.fileno()
    outputs = {proc.stdout.fileno(): channel.sendall,
               proc.stderr.fileno(): channel.sendall_stderr}
    try:
        for fd in outputs:
            selector.register(fd, selectors.EVENT_READ)
        # paramiko makes a channel selectable through a pipe it signals
        selector.register(channel, selectors.EVENT_READ)
        reading_channel = True
        channel_paused = False
        pending = b""                   # channel data stdin has not taken
        os.set_blocking(stdin, False)
        drain_until = None
        while outputs:
            if drain_until is None and proc.poll() is not None:
                drain_until = time.monotonic() + DRAIN_SECONDS
            if drain_until is not None and time.monotonic() >= drain_until:
                break
            for key, _ in selector.select(timeout=0.1):
                if key.fileobj is channel:
                    if channel.recv_ready():
                        pending += channel.recv(32768)
                    elif channel.eof_received or channel.closed:
                        selector.unregister(channel)   # EOF for stdin
                        reading_channel = False
                elif key.fd in outputs:
                    try:
                        data = os.read(key.fd, 32768)
                    except OSError:
                        data = b""
                    if data:
                        outputs[key.fd](data)
                    else:
                        selector.unregister(key.fd)
                        del outputs[key.fd]
            pending = _feed(stdin, pending)
            # a command that does not read its stdin: stop taking more
            # (the client's window then fills) instead of buffering it all
            if reading_channel and channel_paused != (len(pending) > STDIN_BUFFER):
                channel_paused = not channel_paused
                if channel_paused:
                    selector.unregister(channel)
                else:
                    selector.register(channel, selectors.EVENT_READ)
            if not reading_channel and not pending and stdin >= 0:
                proc.stdin.close()      # EOF for the command
                stdin = -1
    finally:
        selector.close()


#: Bytes of stdin the gateway buffers for a command that is not reading it.
STDIN_BUFFER = 1 << 20


def _feed(stdin: int, pending: bytes) -> bytes:
    """Write what stdin takes now; the rest stays pending."""
    if stdin < 0 or not pending:
        return b"" if stdin < 0 else pending
    try:
        written = os.write(stdin, pending)
    except BlockingIOError:
        return pending
    except OSError:
        return b""                      # the command exited without reading
    return pending[written:]
