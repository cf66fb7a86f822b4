"""``rally-metadata-meter compare`` on synthetic Rally JSON exports."""

import json
import random

import pytest

from rally_metadata_plugin import cli
from rally_metadata_plugin.cli import compare
from rally_metadata_plugin.core import report


def iteration_output(downtimes, pause=0.02):
    migrations = tuple(
        report.MigrationFigures(index=i, source_host="a", target_host="b", duration=1.0,
                                downtime=d, downtime_error=0.1, max_outage=d,
                                outage_count=1 if d else 0, pause=pause, server="srv")
        for i, d in enumerate(downtimes, 1))
    figures = report.IterationFigures(measured=True, total_downtime=sum(downtimes),
                                      max_outage=max(downtimes), outage_count=len(downtimes),
                                      migrations=migrations)
    additive, complete = report.charts(report.IterationReport(figures))
    return {"additive": additive, "complete": complete}


def export(iterations, uuid="11111111-2222-3333-4444-555555555555", sla_ok=True):
    workload = {
        "scenario": {report.SCENARIO_NAME: {}},
        "position": 0,
        "data": [{"output": iteration_output(d), "error": []} for d in iterations],
        "total_iteration_count": len(iterations),
        "failed_iteration_count": 0,
        "sla_results": {"sla": [{"criterion": "max_metadata_downtime", "success": sla_ok,
                                 "detail": "worst: iteration 1, migration 1"}]},
    }
    return {"tasks": [{"uuid": uuid, "subtasks": [{"title": "t", "workloads": [workload]}]}]}


def draws(seed, low, high, iterations=4, migrations=3):
    rng = random.Random(seed)
    return [[round(rng.uniform(low, high), 3) for _ in range(migrations)]
            for _ in range(iterations)]


def write(tmp_path, name, document):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def test_export_round_trip_keeps_every_migration():
    (run,) = compare.runs_from_export(export(draws(1, 0.2, 1.5)), "base")
    (workload,) = run.workloads.values()
    assert len(workload.migrations) == 12
    assert workload.by_index(compare.METRICS_BY_NAME["downtime"]).keys() == {1, 2, 3}


def test_regression_exit_1_and_json(tmp_path, capsys):
    base = write(tmp_path, "base.json", export(draws(1, 0.2, 1.5)))
    slow = write(tmp_path, "slow.json", export(draws(2, 7, 12), sla_ok=False))
    assert cli.main(["compare", base, slow, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["verdict"] == "regression"
    downtime = [c for c in document["comparisons"] if c["metric"] == "downtime"][0]
    assert downtime["verdict"] == "regression" and downtime["gating"]
    assert downtime["interval"][0] > 0
    assert downtime["baseline"]["count"] == 12
    assert document["sla_breaches"]["slow.json"]
    assert document["method"].startswith("difference of medians")


def test_no_change_exit_0_text(tmp_path, capsys):
    base = write(tmp_path, "a.json", export(draws(1, 0.2, 1.5)))
    other = write(tmp_path, "b.json", export(draws(3, 0.2, 1.5)))
    assert cli.main(["compare", base, other]) == 0
    out = capsys.readouterr().out
    assert "verdict: no significant change" in out
    assert "Metadata downtime per migration" in out


def test_improvement_is_exit_0(tmp_path, capsys):
    slow = write(tmp_path, "slow.json", export(draws(2, 7, 12)))
    base = write(tmp_path, "base.json", export(draws(1, 0.2, 1.5)))
    assert cli.main(["compare", slow, base]) == 0
    assert "verdict: improvement" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("not json", "not JSON"),
    (json.dumps({"foo": 1}), "not a Rally JSON export"),
    (json.dumps({"tasks": []}), "holds no task"),
    (json.dumps({"tasks": [{"uuid": "u", "subtasks": [{"workloads": [
        {"scenario": {"Dummy.dummy": {}}, "data": []}]}]}]}), "has no MetadataDowntime"),
])
def test_unusable_input_exit_2_with_a_message(tmp_path, capsys, content, message):
    good = write(tmp_path, "good.json", export(draws(1, 0.2, 1.5)))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert cli.main(["compare", good, str(bad)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file_and_unknown_uuid_exit_2(tmp_path, capsys):
    good = write(tmp_path, "good.json", export(draws(1, 0.2, 1.5)))
    assert cli.main(["compare", good, str(tmp_path / "nope.json")]) == 2
    assert "no such file, and not a task UUID" in capsys.readouterr().err


def test_html_page_is_self_contained(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the compare extra is not installed")
    base = write(tmp_path, "base.json", export(draws(1, 0.2, 1.5)))
    slow = write(tmp_path, "slow.json", export(draws(2, 7, 12)))
    page = tmp_path / "page.html"
    assert cli.main(["compare", base, slow, "--html", str(page)]) == 1
    text = page.read_text()
    assert text.count("<svg") == 3
    assert "regression" in text and "by migration number" in text
    # Nothing to fetch: XML namespace names (xmlns="http://...") are identifiers only.
    for loads_something in ('src="http', "src='http", 'href="http', "href='http", "<link",
                            "@import", "url(http", "url(//", "<script"):
        assert loads_something not in text


def test_failed_migrations_are_not_compared():
    rows = (report.MigrationFigures(index=1, downtime=2.0, max_outage=2.0, outage_count=1),
            report.MigrationFigures(index=2, downtime=0.0, status="failed: rejected"))
    figures = report.IterationFigures(measured=True, total_downtime=2.0, max_outage=2.0,
                                      outage_count=1, migrations=rows)
    additive, complete = report.charts(report.IterationReport(figures))
    document = export([[1.0]])
    workload = document["tasks"][0]["subtasks"][0]["workloads"][0]
    workload["data"] = [{"output": {"additive": additive, "complete": complete}, "error": []}]
    (run,) = compare.runs_from_export(document, "base")
    (found,) = run.workloads.values()
    assert [m.index for m in found.migrations] == [1]
    assert found.values(compare.METRICS_BY_NAME["downtime"]) == [2.0]


def network_export(network_downtimes, uuid="66666666-2222-3333-4444-555555555555"):
    """An export whose migrations also carry network downtime (None: no network meter)."""
    document = export([[0.5] * len(n) for n in network_downtimes], uuid=uuid)
    workload = document["tasks"][0]["subtasks"][0]["workloads"][0]
    for iteration, network in zip(workload["data"], network_downtimes):
        figures = report.extract(iteration["output"])
        rows = tuple(report.MigrationFigures(**{**m.__dict__, "network_downtime": n,
                                                "network_downtime_error": 0.1})
                     for m, n in zip(figures.migrations, network))
        figures = report.IterationFigures(**{**figures.__dict__, "migrations": rows,
                                             "network_downtime": sum(network)})
        additive, complete = report.charts(report.IterationReport(figures))
        iteration["output"] = {"additive": additive, "complete": complete}
    return document


def test_network_downtime_is_a_metric_that_gates_when_asked(tmp_path, capsys):
    base = write(tmp_path, "base.json", network_export(draws(1, 0.2, 1.0)))
    slow = write(tmp_path, "slow.json", network_export(draws(2, 4, 6)))
    # Not gating by default: metadata did not change.
    assert cli.main(["compare", base, slow, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    network = [c for c in document["comparisons"] if c["metric"] == "network_downtime"][0]
    assert network["verdict"] == "regression" and not network["gating"]
    assert cli.main(["compare", base, slow, "--gate", "network_downtime"]) == 1
    out = capsys.readouterr().out
    assert "Network downtime per migration" in out and "verdict: regression" in out
    html_page = tmp_path / "compare.html"
    assert cli.main(["compare", base, slow, "--html", str(html_page)]) == 0
    assert "Network downtime per migration: every migration" in html_page.read_text()


def test_runs_without_the_network_meter_show_no_network_row_and_cannot_gate_on_it(
        tmp_path, capsys):
    base = write(tmp_path, "a.json", export(draws(1, 0.2, 1.5)))
    other = write(tmp_path, "b.json", export(draws(3, 0.2, 1.5)))
    assert cli.main(["compare", base, other]) == 0
    assert "Network downtime" not in capsys.readouterr().out
    assert cli.main(["compare", base, other, "--gate", "network_downtime"]) == 2
    err = capsys.readouterr().err
    assert "--gate network_downtime: a.json has no network downtime per migration" in err
    assert "network_probe none" in err
