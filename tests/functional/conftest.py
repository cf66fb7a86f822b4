"""Fixtures for running the real guest meter (see guest_env.py)."""

from __future__ import annotations

import pathlib
import sys
import uuid

import pytest

# guest_env is imported by the test modules and tools/bench_meter.py; make it
# importable whatever pytest's import mode.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import guest_env  # noqa: E402


@pytest.fixture
def expect_text():
    return f"meter-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def netns():
    """A private network namespace with 169.254.169.254 on lo; always deleted."""
    guest_env.require_netns()
    ns = guest_env.NetNS()
    ns.create()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def make_server():
    servers = []

    def make(body, **kwargs):
        server = guest_env.MetadataServer(body, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def make_guest(tmp_path):
    """Guests whose processes are killed (by process group) whatever happens."""
    guests = []

    def make(shell="busybox", tools=("wget",), netns=None):
        guest_env.require_shell(shell)
        guest = guest_env.Guest(tmp_path / f"guest{len(guests)}", shell, tools, netns)
        guests.append(guest)
        return guest

    yield make
    for guest in guests:
        guest.close()
