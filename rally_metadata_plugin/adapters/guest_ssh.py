"""The SSH connection to a guest: Rally's ``sshutils.SSH``, made safe under load.

Rally's ``SSH`` connects with paramiko's ``SSHClient.connect(timeout=1)``,
and paramiko applies that one second to the TCP connect *and* to the whole
SSH negotiation (banner, key exchange).  Two things then go wrong when the
guest, or the host running the client, is busy:

* a negotiation that takes longer than a second fails, and ``SSH.wait``
  tries again a second later with a new connection, which the guest must
  negotiate from the start: the busier the guest, the more handshakes it is
  sent, and none completes;
* the abandoned connection is never closed: ``connect`` raises without
  closing its transport, whose thread goes on negotiating (up to paramiko's
  15 s banner timeout) and, if it succeeds, stays connected, idle, for the
  life of the process, holding a connection and a thread in the guest's
  sshd too.

:class:`GuestSSH` keeps Rally's interface and its one second for the TCP
connect (a guest still booting refuses fast, and is retried fast), gives
the negotiation :data:`HANDSHAKE_TIMEOUT`, bounded by what is left of a
``wait``, and closes the client of any failed attempt. Its idle connection
checks whether it was closed once a second, not ten times (:class:`_Transport`),
and sends without Nagle's delay, as OpenSSH does.
"""

from __future__ import annotations

import socket
import time
from typing import Optional

import paramiko
from rally import exceptions
from rally.utils import sshutils

#: Seconds for the TCP connect, as Rally's ``SSH`` gives it.
CONNECT_TIMEOUT = 1.0
#: Seconds the SSH negotiation (banner, key exchange, authentication) may
#: take: paramiko's own bound for the server's banner.
HANDSHAKE_TIMEOUT = 15.0
#: The shortest negotiation worth attempting.
MIN_HANDSHAKE_TIMEOUT = 1.0
#: How often an idle connection's thread wakes to see whether it was closed.
IDLE_CHECK_SECONDS = 1.0


class _Transport(paramiko.Transport):
    """paramiko's client transport, waking once a second when idle, not ten
    times: a Rally process holds one connection per concurrent iteration,
    and hundreds of threads polling for nothing take the CPU and the GIL
    from the scenario's threads. Incoming data still wakes it at once, and
    a close needs no wake-up (paramiko then only waits for the socket)."""

    _active_check_timeout = IDLE_CHECK_SECONDS


class GuestSSH(sshutils.SSH):
    """``sshutils.SSH`` whose failed connects leave nothing behind (see the module)."""

    def __init__(self, user: str, host: str, port: int = 22, pkey=None,
                 key_filename: Optional[str] = None, password: Optional[str] = None, *,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        super().__init__(user, host, port=port, pkey=pkey, key_filename=key_filename,
                         password=password)
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        # time.monotonic() by which a running wait() must end, or None
        self._wait_until: Optional[float] = None

    def wait(self, timeout: float = 120, interval: float = 1):
        """``SSH.wait``, each attempt's negotiation bounded by the time left."""
        self._wait_until = time.monotonic() + timeout
        try:
            return super().wait(timeout=timeout, interval=interval)
        finally:
            self._wait_until = None

    def _get_client(self) -> paramiko.SSHClient:
        return self.client()

    def client(self, timeout: Optional[float] = None) -> paramiko.SSHClient:
        """The connected client, connecting first if needed; the negotiation
        gets at most ``timeout`` seconds (and :attr:`handshake_timeout`)."""
        if self._client:
            return self._client
        handshake = self.handshake_timeout
        for bound in (timeout, self._remaining()):
            if bound is not None:
                handshake = min(handshake, max(MIN_HANDSHAKE_TIMEOUT, bound))
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        sock = None
        try:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=self.connect_timeout)
            # as OpenSSH does: with Nagle, a small packet sent right after
            # another (a command after its channel request, stdin after the
            # command) waits for the server's delayed ACK, 40 ms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(self.host, username=self.user, port=self.port, pkey=self.pkey,
                           key_filename=self.key_filename, password=self.password,
                           sock=sock, timeout=handshake, banner_timeout=handshake,
                           auth_timeout=handshake, transport_factory=_Transport)
        except Exception as e:
            # Its transport thread would go on negotiating, then stay connected.
            client.close()
            if sock is not None:
                sock.close()
            self._client = False
            raise exceptions.SSHError(
                f"Exception {type(e)} was raised during connect to "
                f"{self.user}@{self.host}:{self.port}. Exception value is: {e!r}") from e
        self._client = client
        return client

    def _remaining(self) -> Optional[float]:
        if self._wait_until is None:
            return None
        return self._wait_until - time.monotonic()
