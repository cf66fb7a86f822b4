"""tools/bench_scale.py: what its probe-rate presets ask of the task."""

from __future__ import annotations

import importlib.util
import pathlib


def _bench_scale():
    path = pathlib.Path(__file__).resolve().parents[2] / "tools" / "bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_1s_preset_sets_every_probe_to_once_a_second():
    # the guest meter's probes, also while migrating, and the network meter's
    assert _bench_scale().RATES["1s"] == {
        "probe_interval": 1.0, "fast_probe_interval": 1.0,
        "network_probe_interval": 1.0}


def test_the_default_preset_is_the_task_defaults():
    assert _bench_scale().RATES["default"] == {}
