"""Fixtures for running the real guest meter (see rally_metadata_plugin.testing)."""

from __future__ import annotations

import uuid

import pytest

from functional_helpers import require_netns, require_shell
from rally_metadata_plugin.testing.guest import Guest
from rally_metadata_plugin.testing.metadata_server import MetadataServer
from rally_metadata_plugin.testing.netns import NetNS


@pytest.fixture
def expect_text():
    return f"meter-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def netns():
    """A private network namespace with 169.254.169.254 on lo; always deleted."""
    require_netns()
    ns = NetNS()
    ns.create()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def make_server():
    servers = []

    def make(body, **kwargs):
        server = MetadataServer(body, **kwargs)
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
        require_shell(shell)
        guest = Guest(tmp_path / f"guest{len(guests)}", shell, tools, netns)
        guests.append(guest)
        return guest

    yield make
    for guest in guests:
        guest.close()
