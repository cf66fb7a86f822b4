"""Smoke test: the real rally CLI runs a stock rally-openstack scenario
against the devcloud, with 0 errors and nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RALLY = Path(sys.executable).with_name("rally")
if not RALLY.exists() and shutil.which("rally"):
    RALLY = Path(shutil.which("rally"))

# the stock NovaScenario._live_migrate passes disk_over_commit, which
# novaclient rejects from 2.25 on (G3 in the API surface notes)
NOVA_VERSION = "2.24"

TASK = """\
---
version: 2
title: devcloud smoke
subtasks:
  - title: boot, live-migrate, delete
    scenario:
      NovaServers.boot_and_live_migrate_server:
        image: {name: cirros}
        flavor: {name: m1.tiny}
        block_migration: false
        disk_over_commit: false
    runner:
      constant: {times: 2, concurrency: 1}
    contexts:
      network: {}
      keypair: {}
      allow_ssh: null
"""


def _rally(state: Path, home: Path, *args: str, check: bool = True
           ) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home))
    result = subprocess.run(
        [str(RALLY), "--config-file", str(state / "rally.conf"), *args],
        env=env, capture_output=True, text=True, timeout=240)
    if check:
        assert result.returncode == 0, (args, result.stdout[-4000:],
                                        result.stderr[-4000:])
    return result


@pytest.mark.skipif(not RALLY.exists(), reason="rally CLI not installed "
                    "next to this Python interpreter")
def test_stock_boot_and_live_migrate_with_rally_cli(devcloud_factory,
                                                    tmp_path):
    cloud = devcloud_factory(nova_version=NOVA_VERSION)
    state, home = cloud.state_dir, tmp_path / "home"
    home.mkdir()
    _rally(state, home, "db", "create")
    _rally(state, home, "env", "create", "--name", "devcloud", "--spec",
           str(cloud.env_spec_path))
    check = _rally(state, home, "env", "check")
    assert "openstack" in check.stdout
    (tmp_path / "task.yaml").write_text(TASK)
    _rally(state, home, "task", "start", str(tmp_path / "task.yaml"))
    report = tmp_path / "report.json"
    _rally(state, home, "task", "report", "--json", "--out", str(report))

    task = json.loads(report.read_text())["tasks"][0]
    assert task["status"] == "finished", task["status"]
    workload = task["subtasks"][0]["workloads"][0]
    assert len(workload["data"]) == 2
    errors = [it["error"] for it in workload["data"] if it["error"]]
    assert errors == []
    assert workload["pass_sla"]
    actions = {a["name"] for it in workload["data"]
               for a in it["atomic_actions"]}
    assert {"nova.boot_server", "nova.live_migrate",
            "nova.delete_server"} <= actions

    truth = [r for r in cloud.truth() if r["status"] == "completed"]
    assert len(truth) == 2
    assert all(r["source"] != r["destination"] for r in truth)

    statuses = [line.split()[4] for line in
                (state / "requests.log").read_text().splitlines()]
    assert not [s for s in statuses if s.startswith("5")]

    backend = cloud.backend
    assert backend.servers == {}
    assert backend.ports == {}
    assert backend.floatingips == {}
    assert backend.routers == {}
    assert [n.name for n in backend.networks.values()] == ["public"]
    assert backend.keypairs == {}
    assert {g.name for g in backend.security_groups.values()} == {"default"}
