"""Start/stop protocol of the real guest script, fast mode, and its fatal exits."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import sys
import time

import pytest

from functional_helpers import require, skip_where_applets_come_first
from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import probe_script as script
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.procfs import group_members, proc_stat
from rally_metadata_plugin.testing.guest import BUSYBOX_BUILDS, SHELLS, wait_group_gone
from rally_metadata_plugin.testing.netns import is_root

ALWAYS_WGET = "the guest always has busybox wget, whatever its bin directory holds"


def _proc_field(pid, index):
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()[index]


@pytest.mark.parametrize("shell", SHELLS)
def test_pid_file_written_before_first_probe(make_server, make_guest, expect_text, shell):
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, ("wget",))
    settings = guest.settings(url=server.url(), expect=expect_text)
    seen = []

    def on_request():
        if not seen:
            path = pathlib.Path(settings.pid_path)
            seen.append(path.read_text() if path.exists() else None)

    server.on_request = on_request
    pid = guest.start(settings)
    # The meter is a session and process-group leader (so the group can be stopped).
    assert int(_proc_field(pid, 2)) == pid  # pgrp
    assert int(_proc_field(pid, 3)) == pid  # session
    assert pathlib.Path(settings.pid_path).read_text().strip() == str(pid)
    log = guest.wait_for_good_probes(settings, count=2)
    assert seen and seen[0] is not None, "the first request arrived before the pid file"
    assert seen[0].strip() == str(pid)
    first = guest.log_text(settings).splitlines()[0]
    assert first.startswith("#start "), first
    assert f"tool=wget interval={script._seconds(settings.interval)}" in log.events[0].detail
    guest.stop(settings)


@pytest.mark.parametrize("tool", ["wget", "curl"])
@pytest.mark.parametrize("shell", SHELLS)
def test_stop_kills_the_process_group_with_probes_in_flight(make_server, make_guest,
                                                           expect_text, shell, tool):
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, (tool,))
    # Long probe timeout: probes stay in flight while the server hangs.
    settings = guest.settings(url=server.url(), expect=expect_text, tool=tool, timeout=5,
                              connect_timeout=0.5)
    pid = guest.start(settings)
    guest.wait_for_good_probes(settings, count=2)
    server.set_fault(FaultKind.HANG)
    hung_from = server.requests
    deadline = time.monotonic() + 5
    while server.requests < hung_from + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    members = group_members(pid)
    names = {pathlib.Path(f"/proc/{m}/comm").read_text().strip() for m in members
             if os.path.exists(f"/proc/{m}/comm")}
    assert tool in names, f"no {tool} in flight: {names}"
    started = time.monotonic()
    text = guest.stop(settings)
    took = time.monotonic() - started
    left = wait_group_gone(pid, 0.3)
    assert left == [], f"processes left in the meter's group: {left}"
    assert not any(proc_stat(m) for m in members if
                   proc_stat(m) and proc_stat(m)[0] not in "ZX")
    assert took < 2.0, f"stop took {took:.2f} s"
    assert not pathlib.Path(settings.pid_path).exists()
    log = analysis.parse_log(text)
    assert log.stopped_at is not None and log.events[-1].detail == "signal", text
    # The log is unchanged afterwards: nothing was left to write to it.
    time.sleep(0.3)
    assert guest.log_text(settings) == text


@pytest.mark.parametrize("shell", SHELLS)
def test_fast_mode_changes_the_period(make_server, make_guest, expect_text, shell):
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, ("wget",))
    settings = guest.settings(url=server.url(), expect=expect_text, interval=0.2,
                              fast_interval=0.05)
    guest.start(settings)
    guest.wait_for_good_probes(settings, count=2)
    slow_from = boottime.now()
    time.sleep(1.2)
    guest.fast(settings, True)
    fast_from = boottime.now()
    time.sleep(1.0)
    guest.fast(settings, False)
    back_from = boottime.now()
    time.sleep(1.0)
    log = analysis.parse_log(guest.stop(settings))

    def period(lo, hi):
        # Skip the probe straddling the switch (it was already sleeping).
        window = [r for r in log.records if lo + 0.25 <= r.start <= hi]
        return analysis.achieved_period(window), len(window)

    slow, n_slow = period(slow_from, fast_from)
    fast, n_fast = period(fast_from, back_from)
    again, _ = period(back_from, back_from + 1.0)
    assert slow == pytest.approx(0.2, abs=0.03), log
    assert fast == pytest.approx(0.05, abs=0.02), log
    assert again == pytest.approx(0.2, abs=0.03), log
    assert n_fast >= 2 * n_slow
    assert all(r.ok for r in log.records)


@pytest.mark.parametrize("shell", SHELLS)
def test_no_http_client_is_fatal(make_guest, shell):
    guest = make_guest(shell, tools=())
    skip_where_applets_come_first(shell, "a guest without an HTTP client", ALWAYS_WGET)
    for name in ("wget", "curl"):
        assert shutil.which(name, path=guest.env["PATH"]) is None
    settings = guest.settings(expect="x", url="http://127.0.0.1:9/")
    result = guest.run_foreground(settings, timeout=10)
    assert result.returncode == script.EXIT_NO_HTTP_CLIENT == 3, result
    log = analysis.parse_log(guest.log_text(settings))
    assert log.fatal is not None and log.fatal.startswith("no-http-client"), log
    assert log.records == ()
    assert not log.started


@pytest.mark.parametrize("shell", SHELLS)
def test_requested_tool_missing_is_fatal(make_guest, shell):
    guest = make_guest(shell, tools=("wget",))
    settings = guest.settings(expect="x", url="http://127.0.0.1:9/", tool="curl")
    result = guest.run_foreground(settings, timeout=10)
    assert result.returncode == 3
    assert analysis.parse_log(guest.log_text(settings)).fatal.startswith("no-http-client")


@pytest.mark.parametrize("tools,chosen", [(("wget", "curl"), "wget"), (("curl",), "curl")])
@pytest.mark.parametrize("shell", BUSYBOX_BUILDS)
def test_auto_prefers_busybox_wget_then_curl(make_server, make_guest, expect_text, shell,
                                             tools, chosen):
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, tools)
    if "wget" not in tools:
        skip_where_applets_come_first(shell, "a guest with curl but no wget", ALWAYS_WGET)
    settings = guest.settings(url=server.url(), expect=expect_text, duration=1)
    result = guest.run_foreground(settings, timeout=10)
    assert result.returncode == 0, result
    log = analysis.parse_log(guest.log_text(settings))
    assert f"tool={chosen} " in log.events[0].detail
    assert log.events[-1].name == "stop" and log.events[-1].detail == "duration"
    assert len(log.records) >= 3 and all(r.ok for r in log.records), log


@pytest.mark.parametrize("shell", SHELLS)
def test_default_expectation_is_the_hostname(make_server, make_guest, shell):
    hostname = socket.gethostname()
    assert hostname
    server = make_server(f"{hostname}\n")
    guest = make_guest(shell, ("wget",))
    settings = guest.settings(url=server.url(), duration=1)  # expect=""
    assert settings.expect == ""
    assert guest.run_foreground(settings, timeout=10).returncode == 0
    log = analysis.parse_log(guest.log_text(settings))
    assert log.records and all(r.ok for r in log.records), log
    # Another instance's hostname fails on content.
    server.set_fault(FaultKind.WRONG_INSTANCE)
    assert guest.run_foreground(settings, timeout=10).returncode == 0
    log = analysis.parse_log(guest.log_text(settings))
    assert log.records and {r.reason for r in log.records} == {"content"}, log


@pytest.mark.parametrize("shell", SHELLS)
def test_empty_hostname_is_fatal(make_guest, shell, tmp_path):
    """No expected text and an empty hostname: exit 4, never an empty expectation."""
    require(is_root(), "not root: an empty hostname needs a UTS namespace")
    unshare = shutil.which("unshare")
    require(unshare is not None, "util-linux unshare is not installed")
    guest = make_guest(shell, ("wget",))
    settings = guest.settings(url="http://127.0.0.1:9/")
    guest.install(settings)
    # In a private UTS namespace, set the hostname to "" and exec the guest's sh.
    launcher = ("import os, socket, sys; socket.sethostname(''); "
                "os.execv(sys.argv[1], sys.argv[1:])")
    import subprocess

    result = subprocess.run(
        [unshare, "--uts", "--", sys.executable, "-c", launcher, str(guest.bin / "sh"),
         settings.script_path],
        capture_output=True, text=True, env=guest.env, timeout=10)
    assert result.returncode == script.EXIT_NO_EXPECTATION == 4, result
    log = analysis.parse_log(guest.log_text(settings))
    assert log.fatal is not None and log.fatal.startswith("no-expectation"), log
    assert log.records == ()


@pytest.mark.parametrize("shell", SHELLS)
def test_duration_stops_by_itself_after_the_full_duration(make_server, make_guest,
                                                         expect_text, shell):
    server = make_server(expect_text + "\n")
    guest = make_guest(shell, ("wget",))
    settings = guest.settings(url=server.url(), expect=expect_text, duration=1.3)
    started = time.monotonic()
    result = guest.run_foreground(settings, timeout=10)
    assert result.returncode == 0, result
    assert time.monotonic() - started < 1.3 + 1.0
    log = analysis.parse_log(guest.log_text(settings))
    start, stop = log.events[0], log.events[-1]
    assert (start.name, stop.name, stop.detail) == ("start", "stop", "duration"), log
    # Not early (a whole-second deadline stopped it up to 1 s early), not late
    # by more than one interval plus scheduling slack.
    assert 1.3 <= stop.time - start.time <= 1.3 + settings.interval + 0.15, log
    assert len(log.records) >= 6
