"""Every plugin loads through Rally's entry point, without warnings, with full docs.

Rally only logs a WARNING when a plugin module fails to import and the plugin
silently disappears, so this runs the loading in a fresh interpreter and
fails loudly.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

BIN = pathlib.Path(sys.executable).parent

_LOADER = r"""
import json, logging
records = []

class Keep(logging.Handler):
    def emit(self, record):
        records.append((record.levelno, record.name, record.getMessage()))

logging.getLogger().addHandler(Keep(level=logging.WARNING))
logging.getLogger().setLevel(logging.WARNING)

import rally.plugins
rally.plugins.load()
from rally.common import cfg
from rally.common import validation
from rally.task import scenario, sla

found = {
    "scenario": scenario.Scenario.get("MetadataDowntime.boot_and_live_migrate").__module__,
    "sla": sla.SLA.get("max_metadata_downtime").__module__,
    "validator": validation.Validator.get("metadata_meter_args").__module__,
    "baseline_timeout": cfg.CONF.metadata_meter.baseline_timeout,
}
# Building the argument schema is where annotation problems are logged.
scenario.Scenario.get("MetadataDowntime.boot_and_live_migrate").get_info()
print(json.dumps({"found": found, "warnings": [r for r in records if r[0] >= logging.WARNING]}))
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    env = dict(os.environ, HOME=str(tmp_path_factory.mktemp("home")))
    done = subprocess.run([sys.executable, "-c", _LOADER], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_plugins_are_found(loaded):
    result, _ = loaded
    assert result["found"] == {
        "scenario": "rally_metadata_plugin.plugins.scenario",
        "sla": "rally_metadata_plugin.plugins.sla",
        "validator": "rally_metadata_plugin.plugins.scenario",
        "baseline_timeout": 60.0,
    }


def test_no_warning_mentions_this_package(loaded):
    result, stderr = loaded
    ours = [w for w in result["warnings"]
            if "rally_metadata_plugin" in w[1] + w[2] or "MetadataDowntime" in w[2]
            or "metadata_meter" in w[2]]
    assert ours == []
    assert "rally_metadata_plugin" not in stderr


def rally_cli(tmp_path, *args):
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run([str(BIN / "rally"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_plugin_show_scenario_renders_the_manual(tmp_path):
    done = rally_cli(tmp_path, "plugin", "show", "MetadataDowntime.boot_and_live_migrate")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Measure metadata-service downtime seen by a guest across live migrations." in out
    assert "PARAMETERS" in out
    for argument in ("image", "flavor", "migrations", "block_migration", "probe_interval",
                     "recovery_timeout", "metadata_url", "expect", "server_kwargs"):
        assert "| %s " % argument in out
    assert "seconds between probe starts" in out


def test_plugin_show_sla_renders_its_config(tmp_path):
    done = rally_cli(tmp_path, "plugin", "show", "max_metadata_downtime")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Metadata downtime measured in the guest stays within limits" in out
    for key in ("per_migration", "per_iteration", "max_outage"):
        assert "| %s " % key in out


def test_plugin_show_network_sla_and_network_arguments(tmp_path):
    done = rally_cli(tmp_path, "plugin", "show", "max_network_downtime")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Network downtime of the guest seen from the Rally host stays within limits" in out
    for key in ("per_migration", "per_iteration", "max_outage"):
        assert "| %s " % key in out
    assert "network downtime" in out
    done = rally_cli(tmp_path, "plugin", "show", "MetadataDowntime.boot_and_live_migrate")
    for argument in ("network_probe", "network_probe_interval", "network_probe_timeout"):
        assert "| %s " % argument in done.stdout
    assert "ICMP" in done.stdout and "SSH port" in done.stdout
