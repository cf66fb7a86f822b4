"""GuestMeter over a real SSH connection (rally's sshutils + paramiko) to a local test server.

The server runs each exec request in a local ``sh``, like a guest would, so
this covers the fast paramiko exec path and the real probe script end to end.
"""

import io
import socket
import subprocess
import threading
import time

import paramiko
import pytest
from rally.utils import sshutils

from rally_metadata_plugin.adapters import guest_meter as guest
from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import probe_script as script

from test_guest import LocalShell, MetadataService, settings_for


class _Guest(paramiko.ServerInterface):
    def __init__(self, env):
        self.env = env

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_exec_request(self, channel, command):
        threading.Thread(target=self._run, args=(channel, command.decode()), daemon=True).start()
        return True

    def _run(self, channel, command):
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)

        def pump():
            try:
                while True:
                    data = channel.recv(65536)
                    if not data:
                        break
                    proc.stdin.write(data)
                    proc.stdin.flush()
            except (OSError, EOFError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        threading.Thread(target=pump, daemon=True).start()
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait()
        channel.sendall(out)
        channel.sendall_stderr(err)
        channel.send_exit_status(proc.returncode)
        channel.close()


class LocalListener:
    """Accepts TCP connections on 127.0.0.1 in a thread and hands each to ``_serve``."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._serve(conn)

    def _serve(self, conn):
        raise NotImplementedError


class SSHGuest(LocalListener):
    """Accepts SSH connections on 127.0.0.1 and runs commands locally."""

    host_key = paramiko.RSAKey.generate(1024)

    def __init__(self, env):
        self.env = env
        self.transports = []
        super().__init__()

    def _serve(self, conn):
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        transport.start_server(server=_Guest(self.env))
        self.transports.append(transport)

    def close(self):
        self.sock.close()
        for transport in self.transports:
            transport.close()


@pytest.fixture
def ssh_guest():
    server = SSHGuest(LocalShell().env)
    yield server
    server.close()


@pytest.fixture
def service():
    service = MetadataService()
    yield service
    service.close()


def client_for(server):
    key = io.StringIO()
    paramiko.RSAKey.generate(1024).write_private_key(key)
    # A private key as text, like the keypair context hands it over.
    return sshutils.SSH("cirros", "127.0.0.1", port=server.port, pkey=key.getvalue())


def test_meter_over_real_ssh(ssh_guest, service, tmp_path):
    ssh = client_for(ssh_guest)
    settings = settings_for(service, tmp_path)
    with guest.GuestMeter(ssh, settings, poll_interval=0.05, start_timeout=5) as meter:
        ssh.wait(timeout=10, interval=1)  # as VMScenario._wait_for_ssh does
        pid = meter.start()
        meter.wait_for_baseline(5, timeout=10)
        meter.set_fast(True)
        before = meter.clock_sample()
        service.mode = "503"
        time.sleep(0.4)
        service.mode = "ok"
        recovery = meter.wait_for_recovery(5, time.monotonic(), timeout=10)
        assert recovery.recovered
        meter.set_fast(False)
        text = meter.stop()
    assert pid > 0
    assert before.error < 0.5
    assert not ssh._client  # closed
    outages = analysis.analyze(analysis.parse_log(text)).outages
    assert [o.main_reason for o in outages] == ["http:503"]


def test_fast_exec_round_trip_is_short(ssh_guest):
    ssh = client_for(ssh_guest)
    meter = guest.GuestMeter(ssh, script.ProbeSettings(expect="x"))
    ssh.execute("true")  # connect
    started = time.monotonic()
    for _ in range(3):
        sample = meter.clock_sample()
    assert sample.guest > 0
    assert (time.monotonic() - started) / 3 < 0.5
    assert sample.error < 0.3
    ssh.close()



# -- a connection that dies silently (the floating IP moved) ---------------------------------


class SilentProxy(LocalListener):
    """A TCP relay to the SSH guest whose connections can die without a word.

    :meth:`drop` makes every relayed connection swallow what either side
    sends, with no FIN and no RST, as when the floating IP moves to another
    host: the client only learns from a timeout.  New connections relay.
    """

    def __init__(self, port):
        self.target = port
        self.links = []
        super().__init__()

    def _serve(self, client):
        upstream = socket.create_connection(("127.0.0.1", self.target))
        link = {"dropped": False, "socks": (client, upstream)}
        self.links.append(link)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst, link), daemon=True).start()

    @staticmethod
    def _pump(src, dst, link):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not link["dropped"]:
                    dst.sendall(data)
        except OSError:
            pass
        if not link["dropped"]:
            for sock in link["socks"]:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self):
        for link in self.links:
            link["dropped"] = True

    def close(self):
        self.sock.close()
        for link in self.links:
            for sock in link["socks"]:
                sock.close()


@pytest.fixture
def proxy(ssh_guest):
    relay = SilentProxy(ssh_guest.port)
    yield relay
    relay.close()


def test_silently_dropped_connection_costs_one_short_attempt(proxy, service, tmp_path):
    """After the floating IP moves, recovery is seen within seconds, not the whole timeout."""
    ssh = client_for(proxy)
    settings = settings_for(service, tmp_path)
    with guest.GuestMeter(ssh, settings, poll_interval=0.05, start_timeout=5,
                          command_timeout=60) as meter:
        meter.start()
        meter.wait_for_baseline(3, timeout=10)
        proxy.drop()
        started = time.monotonic()
        recovery = meter.wait_for_recovery(3, started, timeout=25)
        took = time.monotonic() - started
        assert recovery.recovered
        assert took < 12, f"recovery seen after {took:.1f} s"
        meter.stop()


def test_every_command_survives_a_silently_dropped_connection(proxy, service, tmp_path):
    ssh = client_for(proxy)
    settings = settings_for(service, tmp_path)
    with guest.GuestMeter(ssh, settings, poll_interval=0.05, start_timeout=5,
                          command_timeout=60, retry_timeout=1) as meter:
        meter.start()
        meter.wait_for_baseline(3, timeout=10)
        for step in (lambda: meter.set_fast(True), meter.clock_sample,
                     lambda: meter.set_fast(False),
                     meter.read, meter.stop):
            proxy.drop()
            started = time.monotonic()
            step()
            assert time.monotonic() - started < 1 + 3 + 3, step
        assert "#stop" in meter.final_log
