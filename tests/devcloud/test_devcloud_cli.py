"""The ``serve`` command as a subprocess: startup time, state files, clean
shutdown on SIGTERM/SIGINT/SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from devcloud_helpers import boot_guest, clients
from rally_metadata_plugin.devcloud.config import DevCloudConfig, default_users
from rally_metadata_plugin.devcloud.guests import tagged_processes
from rally_metadata_plugin.devcloud.procfs import proc_state

REPO = Path(__file__).resolve().parents[2]


def _as_from_a_terminal() -> None:
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _serve(state: Path, *extra: str) -> tuple[subprocess.Popen, dict, float]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rally_metadata_plugin.devcloud.cli", "serve",
         "--profile", "healthy", "--seed", "1", "--state-dir", str(state),
         "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        # as started from a terminal: a test session run in the background
        # (`pytest &` in a script) ignores SIGINT, one run under nohup
        # SIGHUP, and so would its children, on purpose (see
        # lifetime.handle_stop_signals)
        preexec_fn=_as_from_a_terminal)
    line = proc.stdout.readline()
    elapsed = time.monotonic() - started
    assert line, proc.stderr.read()
    return proc, json.loads(line), elapsed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_serve_writes_state_and_shuts_down_cleanly(tmp_path, signum):
    cidr = {signal.SIGTERM: "127.0.9.0/24", signal.SIGINT: "127.0.10.0/24",
            signal.SIGHUP: "127.0.11.0/24"}[signum]
    proc, info, elapsed = _serve(tmp_path, "--hypervisors", "3",
                                 "--ssh-port", "2222", "--users", "2",
                                 "--floating-cidr", cidr)
    try:
        assert elapsed < 2.0, f"startup took {elapsed:.2f} s"
        assert json.loads((tmp_path / "ready").read_text()) == info
        spec = json.loads((tmp_path / "env.json").read_text())["openstack"]
        assert spec["auth_url"] == info["auth_url"]
        assert spec["region_name"] == "RegionOne"
        assert spec["admin"]["username"] == "admin"
        assert [u["username"] for u in spec["users"]] == ["demo", "demo2"]
        assert spec["api_info"] == {"nova": {"version": "2.79"}}
        conf = (tmp_path / "rally.conf").read_text()
        assert "[database]" in conf and str(tmp_path) in conf
        assert "nova_server_live_migrate_poll_interval" in conf
        for name in ("truth.jsonl", "requests.log"):
            assert (tmp_path / name).exists()

        remote = SimpleNamespace(
            auth_url=info["auth_url"],
            config=DevCloudConfig(state_dir=tmp_path, users=default_users(2),
                                  floating_cidr=cidr))
        admin = clients(remote, "admin").nova("2.79")
        assert len(admin.hypervisors.list()) == 3
        guest = boot_guest(remote, user="demo", name="cli-vm")
        guest.run("cat > l.sh <<'EOF'\necho $$ > l.pid\n"
                  "while :; do sleep 0.1; done\nEOF\n"
                  "setsid sh l.sh </dev/null >/dev/null 2>&1 &")
        time.sleep(0.3)
        pid = int(guest.run("cat l.pid")[1])
        assert proc_state(pid) in ("S", "R")
        assert "POST /compute/v2.1/servers 202" in (
            tmp_path / "requests.log").read_text()
    finally:
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
    assert proc_state(pid) in (None, "Z")
    assert tagged_processes(guest.server_id) == []
    assert not (tmp_path / "ready").exists()
