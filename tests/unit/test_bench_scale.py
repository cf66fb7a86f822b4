"""tools/bench_scale.py: what its probe-rate presets ask of the task."""

from __future__ import annotations

from repo_tools import load_tool


def _bench_scale():
    return load_tool("bench_scale")


def test_the_1s_preset_sets_every_probe_to_once_a_second():
    # the guest meter's probes, also while migrating, and the network meter's
    assert _bench_scale().RATES["1s"] == {
        "probe_interval": 1.0, "fast_probe_interval": 1.0,
        "network_probe_interval": 1.0}


def test_the_default_preset_is_the_task_defaults():
    assert _bench_scale().RATES["default"] == {}
