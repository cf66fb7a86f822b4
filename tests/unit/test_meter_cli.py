"""Unit tests of ``rally-metadata-meter`` (rally_metadata_plugin.cli)."""

from __future__ import annotations

import io
import json

import pytest

from rally_metadata_plugin import cli

LOG = (
    "#start 100.00 v=1 tool=wget interval=0.2 fast_interval=0.05 timeout=1\n"
    "1 100.00 100.01 P ok\n"
    "2 100.20 100.21 P ok\n"
    "3 100.40 100.41 F wget:refused\n"
    "4 100.60 100.61 F wget:refused\n"
    "5 100.80 100.81 P ok\n"
    "6 101.00 101.01 P ok\n"
    "7 101.20 102.20 F wget:timeout\n"
    "8 101.40 101.41 P ok\n"
    "garbage\n"
    "9 101.60 101."
)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / "meter.log"
    path.write_text(LOG)
    return path


def test_analyze_json_keys_and_types(capsys, log_file):
    code, out, err = run(capsys, "analyze", str(log_file), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert isinstance(doc["downtime"], float)
    assert doc["downtime"] == pytest.approx(0.4 + 0.2)
    assert isinstance(doc["max_outage"], float)
    assert doc["max_outage"] == pytest.approx(0.4)
    assert doc["successes"] == 5 and doc["failures"] == 3
    assert isinstance(doc["successes"], int) and isinstance(doc["failures"], int)
    assert doc["period"] == pytest.approx(0.2)
    assert doc["skipped_lines"] == 2
    assert doc["fatal"] is None
    assert isinstance(doc["outages"], list) and len(doc["outages"]) == 2
    for outage in doc["outages"]:
        assert isinstance(outage, dict)
        for key in ("start", "end", "duration"):
            assert isinstance(outage[key], float), key
        assert outage["ongoing"] is False
        assert outage["lower"] <= outage["duration"] <= outage["upper"]
    assert doc["outages"][0]["reasons"] == {"wget:refused": 2}
    assert doc["outages"][0]["start"] == pytest.approx(100.3)
    assert doc["outages"][0]["end"] == pytest.approx(100.7)


def test_analyze_json_empty_log(capsys, tmp_path):
    path = tmp_path / "empty.log"
    path.write_text("")
    code, out, _ = run(capsys, "analyze", str(path), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["downtime"] == 0.0 and isinstance(doc["downtime"], float)
    assert doc["max_outage"] == 0.0
    assert doc["outages"] == []
    assert doc["period"] is None
    assert (doc["successes"], doc["failures"]) == (0, 0)


def test_analyze_json_fatal(capsys, tmp_path):
    path = tmp_path / "fatal.log"
    path.write_text("#fatal 3.00 no-http-client neither curl nor wget is installed\n")
    code, out, _ = run(capsys, "analyze", str(path), "--json")
    assert code == 0
    assert json.loads(out)["fatal"].startswith("no-http-client")
    code, out, _ = run(capsys, "analyze", str(path))
    assert "meter gave up: no-http-client" in out


def test_analyze_until_makes_ongoing_outage_count(capsys, tmp_path):
    path = tmp_path / "ongoing.log"
    path.write_text("1 10.00 10.01 P ok\n2 10.20 10.21 P ok\n3 10.40 10.41 F curl:7\n")
    code, out, _ = run(capsys, "analyze", str(path), "--json", "--until", "15")
    doc = json.loads(out)
    assert doc["ongoing"] is True
    assert doc["outages"][0]["ongoing"] is True
    assert doc["outages"][0]["end"] == 15.0
    assert doc["downtime"] == pytest.approx(15 - 10.3)


def test_analyze_text_report(capsys, log_file):
    code, out, _ = run(capsys, "analyze", str(log_file))
    assert code == 0
    assert "probes: 5 ok, 3 failed, period 0.200 s, 2 unreadable line(s) skipped" in out
    assert "in 2 outage(s)" in out
    assert "wget: refused x2" in out
    assert "ONGOING" not in out


def test_analyze_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(LOG))
    code, out, _ = run(capsys, "analyze", "-", "--json")
    assert code == 0
    assert json.loads(out)["failures"] == 3


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_analyze_unreadable_file_exits_2(capsys, tmp_path, kind):
    path = tmp_path / "nope.log" if kind == "missing" else tmp_path
    code, out, err = run(capsys, "analyze", str(path), "--json")
    assert code == 2
    assert out == ""
    assert f"cannot read {path}" in err


def test_analyze_invalid_utf8_does_not_crash(capsys, tmp_path):
    path = tmp_path / "bin.log"
    path.write_bytes(b"1 10.00 10.01 P ok\n\xff\xfe\n2 10.20 10.21 F http:500\n")
    code, out, _ = run(capsys, "analyze", str(path), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["skipped_lines"] == 1 and doc["failures"] == 1


def test_script_prints_the_script(capsys):
    code, out, _ = run(capsys, "script", "--expect", "vm-1", "--interval", "0.5",
                       "--timeout", "0.3", "--tool", "curl")
    assert code == 0
    assert out.startswith("#!/bin/sh\n")
    assert "EXPECT=vm-1\n" in out and "INTERVAL=0.5\n" in out and "TOOL=curl\n" in out
    # --connect-timeout defaults to the smaller of 0.5 and --timeout
    assert "CONNECT_TIMEOUT=0.3\n" in out


@pytest.mark.parametrize("argv,message", [
    (["--interval", "0"], "must be positive, got 0"),
    (["--timeout", "abc"], "not a number: 'abc'"),
    (["--connect-timeout", "2", "--timeout", "1"],
     "connect_timeout (2.0) must not exceed timeout (1.0)"),
    (["--duration", "-3"], "duration must be 0 (unlimited) or positive"),
    (["--duration", "nan"], "duration must be 0 (unlimited) or positive"),
    (["--url", "metadata"], "url must be an http(s) URL"),
    (["--tool", "nc"], "invalid choice"),
])
def test_script_rejects_bad_settings(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["script", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_required(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
