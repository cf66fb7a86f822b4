"""The real guest meter against what real clouds and guests do differently from a laptop.

IPv6 link-local metadata, an old busybox ``timeout`` applet, two meters
sharing a workdir, and the controller reading a long log incrementally.
Each runs the rendered script in a fake CirrOS guest (``fake_guest.Guest``).
"""

from __future__ import annotations

import http.server
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import pytest

from functional_helpers import require, skip_where_applets_come_first
from rally_metadata_plugin.adapters import guest_meter
from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.core import probe_script as script
from rally_metadata_plugin.devcloud.procfs import group_members
from rally_metadata_plugin.testing import guest as fake_guest
from rally_metadata_plugin.testing import netns as fake_netns

# -- IPv6 link-local metadata ---------------------------------------------------------

LINK_LOCAL = "fe80::a9fe:a9fe"


class _IPv6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


def serve_link_local(netns: fake_netns.NetNS, interface: str, body: str):
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
    netns.run([fake_netns.IP, "link", "add", "eth0", "type", "veth", "peer", "name", "md0"])
    for link in ("eth0", "md0"):
        netns.run([fake_netns.IP, "link", "set", link, "up"])
    netns.run([fake_netns.IP, "addr", "add", f"{LINK_LOCAL}/64", "dev", "eth0", "nodad"])
    server = serve_link_local(netns, "eth0", expect_text + "\n")
    yield netns
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("shell,tools,tool,chosen", [
    ("busybox", ("wget", "curl"), "auto", "wget"),  # the default on CirrOS
    ("busybox-static", ("wget", "curl"), "auto", "wget"),
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


# -- busybox before 1.30: "timeout -t SECS" ---------------------------------------------

#: busybox 1.29's timeout applet (CirrOS 0.5): only ``-t SECS [-s SIG] PROG ARGS``.
OLD_TIMEOUT = """#!{busybox} sh
usage() {{
    echo "BusyBox v1.29.3 (2019-01-01) multi-call binary." >&2
    echo "Usage: timeout [-t SECS] [-s SIG] PROG ARGS" >&2
    exit 1
}}
[ "$1" = -t ] && [ -n "$2" ] || usage
secs=$2; shift 2
sig=TERM
if [ "$1" = -s ]; then sig=$2; shift 2; fi
[ $# -gt 0 ] || usage
exec {busybox} timeout -s "$sig" "$secs" "$@"
"""
#: A timeout that never works, whatever the syntax.
BROKEN_TIMEOUT = """#!{busybox} sh
echo "timeout: applet not found" >&2
exit 127
"""
#: ``true`` in a guest starved of CPU: it takes well over a second to run.
SLOW_TRUE = """#!{busybox} sh
{busybox} sleep 1.5
exit 0
"""
#: A busybox wget build that crashes on -T (so the meter bounds it with timeout).
WGET_CRASHING_ON_T = """#!{busybox} sh
for arg; do [ "$arg" = -T ] && kill -SEGV $$; done
exec {busybox} wget "$@"
"""


#: Why a stand-in for an applet cannot be tried with a sh that runs applets first.
SHIM_BYPASSED = "it runs the applet itself and never the stand-in in the guest's bin directory"


def install_shim(guest, name, text):
    path = guest.bin / name
    path.unlink()
    path.write_text(text.format(busybox=fake_guest.BUSYBOX))
    path.chmod(0o755)


@pytest.mark.parametrize("shell", ["busybox", "dash"])
@pytest.mark.parametrize("timeout_applet", ["busybox-1.29", "busybox-1.35"])
def test_wget_bounded_by_either_timeout_syntax(make_server, make_guest, expect_text, shell,
                                               timeout_applet):
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, ("wget",))
    skip_where_applets_come_first(shell, "a wget that crashes on -T", SHIM_BYPASSED)
    install_shim(guest, "wget", WGET_CRASHING_ON_T)
    if timeout_applet == "busybox-1.29":
        install_shim(guest, "timeout", OLD_TIMEOUT)
        assert guest.sh("timeout 1 true", check=False).returncode == 1
        assert guest.sh("timeout -t 1 true", check=False).returncode == 0
    settings = guest.settings(url=server.url(), expect=expect_text, tool="wget", interval=0.1,
                              duration=1.0)
    result = guest.run_foreground(settings, timeout=15)
    assert result.returncode == 0, result
    log = analysis.parse_log(guest.log_text(settings))
    assert len(log.records) >= 5 and {r.reason for r in log.records} == {"ok"}, log
    # A hanging service: every probe is still cut off after the whole-second timeout.
    server.set_fault(FaultKind.HANG)
    result = guest.run_foreground(settings, timeout=15)
    assert result.returncode == 0, result
    log = analysis.parse_log(guest.log_text(settings))
    assert log.records and {r.reason for r in log.records} == {"wget:timeout"}, log
    assert all(r.end - r.start < settings.wget_timeout + 0.5 for r in log.records), log


def test_no_usable_timeout_is_fatal(make_guest):
    guest = make_guest("busybox", ("wget",))
    skip_where_applets_come_first("busybox", "a broken timeout applet", SHIM_BYPASSED)
    install_shim(guest, "wget", WGET_CRASHING_ON_T)
    install_shim(guest, "timeout", BROKEN_TIMEOUT)
    settings = guest.settings(url="http://127.0.0.1:9/", expect="x", tool="wget")
    result = guest.run_foreground(settings, timeout=10)
    assert result.returncode == script.EXIT_NO_PROBE_BOUND, result
    log = analysis.parse_log(guest.log_text(settings))
    assert log.fatal is not None and log.fatal.startswith("no-probe-bound"), log
    assert log.records == ()


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_a_starved_guest_still_finds_its_timeout(make_server, make_guest, expect_text, shell):
    """The start-up check asks which syntax timeout takes: a guest so loaded that true
    takes 1.5 s (seen with 200 process guests on 2 cores) must not be told it has none."""
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, ("wget",))
    skip_where_applets_come_first(shell, "a slow true run by timeout", SHIM_BYPASSED)
    install_shim(guest, "wget", WGET_CRASHING_ON_T)
    install_shim(guest, "true", SLOW_TRUE)
    assert guest.sh("timeout 1 true", check=False).returncode != 0  # the load, as it was seen
    settings = guest.settings(url=server.url(), expect=expect_text, tool="wget", interval=0.1,
                              duration=1.0)
    result = guest.run_foreground(settings, timeout=20)
    assert result.returncode == 0, result
    log = analysis.parse_log(guest.log_text(settings))
    assert log.fatal is None, log
    assert len(log.records) >= 5 and {r.reason for r in log.records} == {"ok"}, log


# -- one meter per workdir ---------------------------------------------------------------


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_a_live_meter_keeps_its_workdir(make_server, make_guest, expect_text, shell):
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, ("wget",))
    settings = guest.settings(url=server.url(), expect=expect_text, interval=0.1)
    pid = guest.start(settings)
    guest.wait_for_good_probes(settings, count=2)

    # Installing again is refused before the log or pid file is touched.
    other = guest.settings(url=server.url(), expect="another", interval=0.1)
    result = guest.sh(script.install_command(other), input=script.render_probe_script(other),
                      check=False)
    assert result.returncode == script.EXIT_METER_BUSY, result
    assert f"Another guest meter (pid {pid}) is running in {settings.workdir}" in result.stderr
    # Running the script by hand is refused too, without writing to the log.
    result = guest.sh(f"sh {settings.script_path}", timeout=10, check=False)
    assert result.returncode == script.EXIT_METER_BUSY, result
    assert f"pid {pid}" in result.stderr
    assert pathlib.Path(settings.pid_path).read_text().strip() == str(pid)
    text = guest.stop(settings)
    log = analysis.parse_log(text)
    assert [e.name for e in log.events] == ["start", "stop"], text
    assert log.skipped_lines == 0 and all(r.ok for r in log.records), text


@pytest.mark.parametrize("holder", ["gone", "not-a-meter"])
def test_a_stale_pid_file_does_not_block(make_server, make_guest, expect_text, holder):
    server = make_server(expect_text + "\n")
    guest = make_guest("busybox", ("wget",))
    settings = guest.settings(url=server.url(), expect=expect_text, interval=0.1)
    if holder == "gone":
        done = guest.sh("sh -c 'echo $$'")
        stale = int(done.stdout)
    else:
        stale = os.getpid()  # alive, but not a meter
    pathlib.Path(settings.workdir).mkdir(parents=True)
    pathlib.Path(settings.pid_path).write_text(f"{stale}\n")
    pid = guest.start(settings)
    assert pid != stale
    guest.wait_for_good_probes(settings, count=2)
    guest.stop(settings)


# -- the controller's reads --------------------------------------------------------------


class GuestShell:
    """Stands in for rally's sshutils.SSH: runs each command with the guest's sh."""

    host = "fake-guest"

    def __init__(self, guest):
        self.guest = guest
        self.received = 0
        self.closed = 0

    def execute(self, cmd, stdin=None, timeout=3600):
        result = self.guest.sh(cmd, input=stdin, timeout=timeout, check=False)
        self.received += len(result.stdout.encode())
        return result.returncode, result.stdout, result.stderr

    def close(self):
        self.closed += 1


@pytest.fixture
def healthy_meter(make_server, make_guest, expect_text):
    """Starts a GuestMeter in a guest whose metadata answers, and waits for its baseline.

    ``healthy_meter(shell, meter_options, **settings)`` returns the meter
    (enter it to stop it) and its pid; the guest kills its process group.
    """
    def start(shell="busybox", meter_options=None, **overrides):
        server = make_server(expect_text + "\n")
        guest = make_guest(shell, ("wget",))
        overrides.setdefault("interval", 0.05)
        settings = guest.settings(url=server.url(), expect=expect_text, **overrides)
        options = dict(poll_interval=0.05, start_timeout=5, **(meter_options or {}))
        meter = guest_meter.GuestMeter(GuestShell(guest), settings, fast_exec=False, **options)
        pid = meter.start()
        guest.pids.append(pid)
        fake_guest.REAPER.watch(pid)
        meter.wait_for_baseline(3, timeout=10)
        return meter, pid

    return start


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_controller_reads_the_real_log_incrementally(healthy_meter, shell):
    meter, _ = healthy_meter(shell)
    with meter:
        sizes = []
        for _ in range(8):
            time.sleep(0.25)
            before = meter.ssh.received
            snapshot = meter.read()
            sizes.append(meter.ssh.received - before)
        text = meter.stop()
    # About 5 records of ~30 bytes per poll, however long the log has grown.
    assert max(sizes) < 600, sizes
    assert len(text) > 3 * max(sizes)
    assert text.startswith(snapshot.text)
    assert set(snapshot.log.records) <= set(analysis.parse_log(text).records)
    assert snapshot.log.skipped_lines == 0


# -- a meter that stopped measuring --------------------------------------------------------


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_a_killed_meter_is_reported_not_mistaken_for_an_outage(healthy_meter, shell):
    meter, pid = healthy_meter(shell)
    with meter:
        os.killpg(pid, signal.SIGKILL)
        assert fake_guest.wait_group_gone(pid) == []
        with pytest.raises(guest_meter.MeterLost) as error:
            meter.wait_for_recovery(3, time.monotonic(), timeout=10)
    assert f"The guest meter (pid {pid}) is gone without logging why" in str(error.value)


@pytest.fixture
def small_file_system(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    require(fake_netns.is_root(), "not root: mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    require(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill_up(directory):
    """Write to ``directory`` until its file system is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_file_system_is_reported(healthy_meter, small_file_system):
    meter, pid = healthy_meter("busybox", dict(stall_timeout=1.0), interval=0.02,
                               fast_interval=0.02, workdir=str(small_file_system / "meter"))
    settings = meter.settings
    with meter:
        fill_up(small_file_system)
        with pytest.raises(guest_meter.MeterLost) as error:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                meter.read()
                time.sleep(0.2)
        assert group_members(pid), "the meter itself should still run"
    message = str(error.value)
    assert f"The guest meter (pid {pid}) runs but its log {settings.log_path} has not " \
           f"grown for" in message
    assert "full" in message and "workdir" in message
