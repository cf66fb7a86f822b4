"""The installed distribution exposes its console scripts and Rally entry point."""

import os
import pathlib
import subprocess
import sys
from importlib import metadata

import pytest

BIN = pathlib.Path(sys.executable).parent


def _entry_points(group):
    return {ep.name: ep for ep in metadata.distribution("rally-metadata-plugin").entry_points
            if ep.group == group}


def test_console_scripts_declared():
    scripts = _entry_points("console_scripts")
    assert scripts["rally-metadata-meter"].value == "rally_metadata_plugin.cli:main"
    assert scripts["rally-metadata-devcloud"].value == "rally_metadata_plugin.devcloud.cli:main"
    for ep in scripts.values():
        assert callable(ep.load())


def test_rally_entry_point_loads_options():
    plugins = _entry_points("rally_plugins")
    assert plugins["path"].value == "rally_metadata_plugin.plugins"
    groups = plugins["options"].load()()
    assert [name for name, _ in groups] == ["metadata_meter"]


def test_meter_console_script_runs():
    result = subprocess.run([str(BIN / "rally-metadata-meter"), "script", "--expect", "abc"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith("#!/bin/sh")
    assert "EXPECT=abc" in result.stdout


def test_rally_version_lists_the_plugin(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    result = subprocess.run([str(BIN / "rally"), "--version"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "rally-metadata-plugin" in result.stdout + result.stderr
