"""The real guest meter against what real clouds and guests do differently from a laptop.

IPv6 link-local metadata, an old busybox ``timeout`` applet, two meters
sharing a workdir, and the controller reading a long log incrementally.
Each runs the rendered script in a fake CirrOS guest (``guest_env.Guest``).
"""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

import guest_env
from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import probe_script as script

# -- IPv6 link-local metadata ---------------------------------------------------------

LINK_LOCAL = "fe80::a9fe:a9fe"


class _IPv6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


def serve_link_local(netns: guest_env.NetNS, interface: str, body: str):
    """An HTTP server on [fe80::a9fe:a9fe%interface]:80 inside ``netns`` answering ``body``."""
    payload = body.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    def make():
        scope = socket.if_nametoindex(interface)  # resolved in the namespace
        return _IPv6Server((LINK_LOCAL, 80, 0, scope), Handler)

    server = netns.call_inside(make)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def link_local_metadata(netns, expect_text):
    """``eth0`` in the namespace carries fe80::a9fe:a9fe, where metadata answers."""
    netns.run([guest_env.IP, "link", "add", "eth0", "type", "veth", "peer", "name", "md0"])
    for link in ("eth0", "md0"):
        netns.run([guest_env.IP, "link", "set", link, "up"])
    netns.run([guest_env.IP, "addr", "add", f"{LINK_LOCAL}/64", "dev", "eth0", "nodad"])
    server = serve_link_local(netns, "eth0", expect_text + "\n")
    yield netns
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("shell,tools,tool,chosen", [
    ("busybox", ("wget", "curl"), "auto", "wget"),  # the default on CirrOS
    ("busybox", ("wget",), "wget", "wget"),
    ("dash", ("wget",), "wget", "wget"),
    ("busybox", ("curl",), "curl", "curl"),
    ("dash", ("curl",), "curl", "curl"),
])
def test_ipv6_link_local_metadata(link_local_metadata, make_guest, expect_text, shell, tools,
                                  tool, chosen):
    guest = make_guest(shell, tools, netns=link_local_metadata)
    settings = guest.settings(url=script.ipv6_metadata_url("eth0"), expect=expect_text,
                              tool=tool, interval=0.1, duration=1.0)
    result = guest.run_foreground(settings, timeout=15)
    assert result.returncode == 0, result
    log = analysis.parse_log(guest.log_text(settings))
    assert f"tool={chosen} " in log.events[0].detail, log
    assert len(log.records) >= 5, log
    assert {r.reason for r in log.records} == {"ok"}, log
