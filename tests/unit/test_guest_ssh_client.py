"""GuestSSH: Rally's SSH client, but a failed connect leaves nothing behind
and a slow handshake is waited for (adapters/guest_ssh.py)."""

import io
import socket
import threading
import time

import paramiko
import pytest
from rally import exceptions

from rally_metadata_plugin.adapters import guest_ssh

from test_guest import LocalShell
from test_guest_ssh import LocalListener, SSHGuest


class SilentListener(LocalListener):
    """Accepts connections and never says a word (a guest too busy to answer)."""

    def __init__(self):
        self.conns = []
        super().__init__()

    def _serve(self, conn):
        self.conns.append(conn)

    def closed_by_client(self, conn, timeout):
        conn.settimeout(timeout)
        try:
            while conn.recv(4096):
                pass          # the client's banner, then EOF
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


class SlowSSHGuest(SSHGuest):
    """An SSH guest whose sshd starts talking only after ``delay`` seconds."""

    delay = 2.0

    def _serve(self, conn):
        threading.Timer(self.delay, super()._serve, args=(conn,)).start()


def _key():
    key = io.StringIO()
    paramiko.RSAKey.generate(1024).write_private_key(key)
    return key.getvalue()


def _client_transports():
    return [t for t in threading.enumerate()
            if isinstance(t, paramiko.Transport) and not t.server_mode and t.is_alive()]


@pytest.fixture
def silent():
    server = SilentListener()
    yield server
    server.close()


def test_a_failed_handshake_closes_its_connection(silent):
    before = len(_client_transports())
    ssh = guest_ssh.GuestSSH("cirros", "127.0.0.1", port=silent.port, pkey=_key(),
                             handshake_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(exceptions.SSHError, match="during connect to"):
        ssh.execute("uname")
    assert time.monotonic() - started < 5
    # Rally's SSH leaves the transport negotiating, then connected, for good
    assert silent.closed_by_client(silent.conns[0], timeout=5)
    deadline = time.monotonic() + 5
    while len(_client_transports()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_client_transports()) == before


def test_wait_bounds_each_handshake_by_the_time_left(silent):
    ssh = guest_ssh.GuestSSH("cirros", "127.0.0.1", port=silent.port, pkey=_key())
    started = time.monotonic()
    with pytest.raises(exceptions.SSHTimeout):
        ssh.wait(timeout=1.5, interval=0.1)
    # not the 15 s handshake bound: what the wait had left (at least 1 s)
    assert time.monotonic() - started < 5


def test_a_handshake_slower_than_a_second_is_waited_for():
    # Rally's SSH gives the whole negotiation 1 s: it would retry forever.
    server = SlowSSHGuest(LocalShell().env)
    try:
        ssh = guest_ssh.GuestSSH("cirros", "127.0.0.1", port=server.port, pkey=_key())
        assert ssh.execute("echo hello")[:2] == (0, "hello\n")
        ssh.wait(timeout=10, interval=1)
        ssh.close()
    finally:
        server.close()


def test_the_tcp_connect_keeps_rallys_one_second():
    ssh = guest_ssh.GuestSSH("cirros", "127.0.0.1", port=1, pkey=_key())
    assert ssh.connect_timeout == 1.0
    with pytest.raises(exceptions.SSHError, match="ConnectionRefused"):
        ssh.execute("uname")


def test_an_idle_connection_wakes_once_a_second():
    # paramiko's 0.1 s: one Rally process holds hundreds of these
    server = SSHGuest(LocalShell().env)
    try:
        ssh = guest_ssh.GuestSSH("cirros", "127.0.0.1", port=server.port, pkey=_key())
        transport = ssh.client().get_transport()
        assert transport.sock.gettimeout() == guest_ssh.IDLE_CHECK_SECONDS == 1.0
        # no Nagle: each command's small packets would wait for delayed ACKs
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        started = time.monotonic()
        assert ssh.execute("echo hello")[:2] == (0, "hello\n")
        ssh.close()
        assert time.monotonic() - started < 2
        assert not transport.is_active()
    finally:
        server.close()
