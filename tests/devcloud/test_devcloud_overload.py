"""The devcloud driven past its bounds: its threads and file descriptors stay
bounded, each server answers as a full real one does (slowly, or 503), it
recovers when the load goes away, and SIGTERM still stops it in seconds.

The devcloud runs as its own process (``rally-metadata-devcloud serve``) with
small limits, so going past them costs the test little.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from rally_metadata_plugin.devcloud import lifetime
from rally_metadata_plugin.devcloud.config import DevCloudConfig, default_users
from rally_metadata_plugin.devcloud.procfs import is_alive

from devcloud_helpers import boot_guest, wait_for

API_LIMIT = 40
METADATA_LIMIT = 30
SSH_LIMIT = 6
COMMAND_LIMIT = 4
CIDR = "127.0.13.0/24"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def threads(pid: int) -> int:
    return _status(pid, "Threads")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Peak:
    """The largest thread and descriptor counts seen while sampling."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads = 0
        self.fds = 0

    def sample(self) -> None:
        self.threads = max(self.threads, threads(self.pid))
        self.fds = max(self.fds, fds(self.pid))


def flood(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` idle TCP connections (a client that connects and says
    nothing, or has not been accepted yet)."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=5)
        sockets.append(sock)
    return sockets


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
    sockets.clear()


def http_get(host: str, port: int, path: str, timeout: float = 10,
             absolute: str | None = None) -> tuple[int, bytes]:
    """One HTTP/1.0 GET on a new connection: (status, body)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        target = absolute or path
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _served(tmp_path: Path, guests: int, api_limit: int = API_LIMIT):
    """A served devcloud with small limits, and booted guests."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rally_metadata_plugin.devcloud.cli", "serve",
         "--state-dir", str(tmp_path), "--floating-cidr", CIDR,
         "--api-connection-limit", str(api_limit),
         "--metadata-connection-limit", str(METADATA_LIMIT),
         "--ssh-connection-limit", str(SSH_LIMIT),
         "--ssh-command-limit", str(COMMAND_LIMIT)],
        env=ENV, stdout=subprocess.DEVNULL)
    try:
        wait_for((tmp_path / "ready").exists, 30, what="devcloud ready")
        info = json.loads((tmp_path / "ready").read_text())
        remote = SimpleNamespace(auth_url=info["auth_url"], config=DevCloudConfig(
            state_dir=tmp_path, users=default_users(1), floating_cidr=CIDR))
        booted = [boot_guest(remote, user="demo", name=f"load-{i}")
                  for i in range(guests)]
        yield SimpleNamespace(proc=proc, info=info, guests=booted,
                              state=Path(tmp_path))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lifetime.kill_guest_processes(Path(tmp_path) / "guests")


@pytest.fixture
def devcloud(tmp_path):
    yield from _served(tmp_path, guests=2)


@pytest.fixture
def roomy_devcloud(tmp_path):
    """Room for more API connections than select() can number."""
    yield from _served(tmp_path, guests=1, api_limit=1500)


def test_overloaded_servers_stay_bounded_answer_as_full_and_recover(devcloud):
    pid = devcloud.proc.pid
    base_threads, base_fds = threads(pid), fds(pid)
    peak = Peak(pid)
    api = urlsplit(devcloud.info["base_url"])
    first, second = devcloud.guests
    pool = concurrent.futures.ThreadPoolExecutor(8)

    # -- APIs: past the connection limit, a request waits; then it is served
    idle = flood((api.hostname, api.port), API_LIMIT * 3)
    late = pool.submit(http_get, api.hostname, api.port, "/identity/v3")
    time.sleep(1.5)
    peak.sample()
    assert not late.done(), "served past the API's connection limit"
    close_all(idle)
    assert late.result(timeout=20)[0] in (200, 300)
    peak.sample()

    # -- metadata: past the limit a connection gets 503 at once; then 200
    _, out, _ = first.run("printf %s \"$http_proxy\"")
    endpoint = urlsplit(out)
    idle = flood((endpoint.hostname, endpoint.port), METADATA_LIMIT)
    time.sleep(0.3)
    peak.sample()
    path = "http://169.254.169.254/openstack/latest/meta_data.json"
    status, body = http_get(endpoint.hostname, endpoint.port, path, absolute=path)
    assert status == 503, body
    close_all(idle)
    time.sleep(0.3)
    status, body = http_get(endpoint.hostname, endpoint.port, path, absolute=path)
    assert status == 200 and json.loads(body)["uuid"] == first.server_id

    # -- SSH: past the connection limit a client waits; then it gets in
    address = (second.address, devcloud.info["ssh_port"])
    idle = flood(address, SSH_LIMIT)
    time.sleep(1.0)
    late = pool.submit(second.run, "echo in", None, 30)
    time.sleep(2.0)
    peak.sample()
    assert not late.done(), "served past the SSH connection limit"
    close_all(idle)
    assert late.result(timeout=30)[:2] == (0, "in\n")

    # -- SSH commands: past the limit an exec waits for a slot, then runs
    with second.ssh() as client:
        started = time.monotonic()
        runs = [pool.submit(_exec, client, "sleep 1.5; echo done")
                for _ in range(COMMAND_LIMIT + 2)]
        time.sleep(0.8)
        peak.sample()
        results = [r.result(timeout=30) for r in runs]
        waited = time.monotonic() - started
    assert results == [(0, "done\n")] * (COMMAND_LIMIT + 2)
    assert waited >= 3.0, "ran more commands at once than the limit"
    pool.shutdown()

    # one transport thread per SSH connection and one per command, nothing
    # per API or metadata connection; descriptors within the limits' sum
    allowance = SSH_LIMIT + 2 + COMMAND_LIMIT + 4
    assert peak.threads <= base_threads + allowance, (base_threads, peak.threads)
    assert peak.fds <= base_fds + API_LIMIT + METADATA_LIMIT + 4 * SSH_LIMIT + 20, \
        (base_fds, peak.fds)
    # and all of it given back
    wait_for(lambda: threads(pid) <= base_threads + 2, 20, what="threads back")


def _exec(client, command: str) -> tuple[int, str]:
    channel = client.get_transport().open_session(timeout=20)
    channel.settimeout(30)
    channel.exec_command(command)
    out = channel.makefile("rb").read().decode()
    return channel.recv_exit_status(), out


def test_sigterm_stops_an_overloaded_devcloud_within_seconds(devcloud):
    pid = devcloud.proc.pid
    api = urlsplit(devcloud.info["base_url"])
    guest = devcloud.guests[0]
    _, out, _ = guest.run("printf %s \"$http_proxy\"")
    endpoint = urlsplit(out)
    guest.run("setsid sh -c 'while :; do sleep 0.05; done' </dev/null >/dev/null 2>&1 &")
    held = (flood((api.hostname, api.port), API_LIMIT * 2)
            + flood((endpoint.hostname, endpoint.port), METADATA_LIMIT * 2)
            + flood((guest.address, devcloud.info["ssh_port"]), SSH_LIMIT * 2))
    assert lifetime.guest_processes(devcloud.state / "guests")
    try:
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        devcloud.proc.wait(timeout=10)
        stopped = time.monotonic() - started
    finally:
        close_all(held)
    assert stopped < 5, f"took {stopped:.1f} s to stop"
    assert not is_alive(pid)
    assert lifetime.guest_processes(devcloud.state / "guests") == {}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((api.hostname, api.port), timeout=2)


def test_served_with_descriptors_numbered_past_select_limit(roomy_devcloud):
    """With a hundred guests the devcloud holds descriptors numbered past
    1024, where select() stops working: every server must go on serving."""
    pid = roomy_devcloud.proc.pid
    api = urlsplit(roomy_devcloud.info["base_url"])
    guest = roomy_devcloud.guests[0]
    _, out, _ = guest.run("printf %s \"$http_proxy\"")
    endpoint = urlsplit(out)
    # idle API connections: waitress keeps them (an idle metadata
    # connection is closed after METADATA_IDLE_SECONDS)
    held = flood((api.hostname, api.port), 1300)
    try:
        wait_for(lambda: fds(pid) > 1100, 30, what="descriptors past 1100")
        assert http_get(api.hostname, api.port, "/identity/v3")[0] in (200, 300)
        path = "http://169.254.169.254/openstack/latest/meta_data.json"
        status, body = http_get(endpoint.hostname, endpoint.port, path,
                                absolute=path)
        assert status == 200 and json.loads(body)["uuid"] == guest.server_id
        assert guest.run("echo in")[:2] == (0, "in\n")
        # and the API is still up afterwards (its I/O thread did not die)
        assert http_get(api.hostname, api.port, "/identity/v3")[0] in (200, 300)
    finally:
        close_all(held)
