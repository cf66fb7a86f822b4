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


def test_the_outcome_counts_the_metadata_service_stalls(tmp_path):
    (tmp_path / "devcloud").mkdir()
    (tmp_path / "devcloud" / "metadata-stalls.jsonl").write_text(
        '{"start": 10.0, "seconds": 0.6}\n{"start": 20.0, "seconds": 4.2}\n')
    found = _bench_scale().outcome(tmp_path)
    assert (found["stalls"], found["longest_stall"]) == (2, 4.2)
    assert _bench_scale().outcome(tmp_path / "elsewhere")["stalls"] == 0
