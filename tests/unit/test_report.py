"""report: figures from a meter log, Rally charts, and the inverse."""

import json

import pytest
from rally.task.processing import charts as rally_charts

from rally_metadata_plugin.core import report


def make_log(verdicts, start=100.0, period=0.2, stop=True, reason="curl:28"):
    """A meter log: one probe per character of ``verdicts`` ('P' or 'F')."""
    lines = ["#start %.2f v=1 tool=curl" % (start - 0.1)]
    t = start
    for seq, verdict in enumerate(verdicts, 1):
        why = "ok" if verdict == "P" else reason
        lines.append("%d %.2f %.2f %s %s" % (seq, t, t + 0.01, verdict, why))
        t += period
    if stop:
        lines.append("#stop %.2f signal" % t)
    return "\n".join(lines) + "\n"


def probe_time(index, start=100.0, period=0.2):
    """Guest time of the probe at 0-based ``index``."""
    return start + index * period


def obs(index, requested, finished, **kw):
    kw.setdefault("target_host", "host-b")
    kw.setdefault("recovered", True)
    return report.MigrationObservation(index, kw.pop("source_host", "host-a"), requested,
                                       finished_at=finished, **kw)


def test_two_migrations_attribute_outages_and_totals():
    # 10 good (baseline), migration 1 at probe 12: 5 failed, 10 good,
    # migration 2 at probe 27: 3 failed, rest good.
    verdicts = "P" * 12 + "FFFFF" + "P" * 10 + "FFF" + "P" * 10
    log = make_log(verdicts)
    observations = [
        obs(1, probe_time(11.5), probe_time(25), duration=3.0, pause=0.3, pause_error=0.02),
        obs(2, probe_time(26.5), probe_time(38), duration=2.5, pause=0.1, pause_error=0.02),
    ]
    result = report.summarize(log, observations, baseline_at=probe_time(4))
    figures = result.figures
    assert figures.measured
    assert figures.outage_count == 2
    first, second = figures.migrations
    assert first.downtime == pytest.approx(1.0, abs=0.01)  # 5 probes x 0.2 s
    assert second.downtime == pytest.approx(0.6, abs=0.01)
    assert figures.total_downtime == pytest.approx(1.6, abs=0.01)
    assert figures.max_outage == pytest.approx(1.0, abs=0.01)
    # Outage edges lie midway between probes: 11.5 (request) and 16.5.
    assert first.first_failure == pytest.approx(0.0, abs=0.01)
    assert first.recovery == pytest.approx(1.0, abs=0.01)
    assert first.downtime_error > 0
    assert (first.source_host, first.target_host, first.pause) == ("host-a", "host-b", 0.3)
    assert not first.ongoing and first.status == report.STATUS_OK


def test_outages_before_the_baseline_are_not_counted():
    log = make_log("FFFF" + "P" * 10 + "FF" + "P" * 6)
    result = report.summarize(log, [obs(1, probe_time(13.5), probe_time(20))],
                              baseline_at=probe_time(8))
    assert result.figures.outage_count == 1
    assert result.figures.total_downtime == pytest.approx(0.4, abs=0.01)
    assert any("before the healthy baseline" in note for note in result.notes)


def test_outage_after_baseline_before_first_migration_counts_in_total_only():
    log = make_log("P" * 8 + "FF" + "P" * 8 + "FFF" + "P" * 5)
    result = report.summarize(log, [obs(1, probe_time(17.5), probe_time(24))],
                              baseline_at=probe_time(4))
    assert result.figures.total_downtime == pytest.approx(1.0, abs=0.01)
    assert result.figures.migrations[0].downtime == pytest.approx(0.6, abs=0.01)
    assert any("before the first migration" in note for note in result.notes)


def test_late_outage_is_charged_to_the_migration_that_caused_it():
    # The outage starts after migration 1 was confirmed recovered but before migration 2.
    log = make_log("P" * 10 + "P" * 6 + "FFFF" + "P" * 10 + "FF" + "P" * 6)
    observations = [obs(1, probe_time(9.5), probe_time(14)),
                    obs(2, probe_time(29.5), probe_time(37))]
    result = report.summarize(log, observations, baseline_at=probe_time(4))
    first, second = result.figures.migrations
    assert first.downtime == pytest.approx(0.8, abs=0.01)
    assert second.downtime == pytest.approx(0.4, abs=0.01)


def test_recovery_timeout_counts_the_ongoing_outage_up_to_the_cutoff():
    # Probes keep failing after the cutoff; those are ignored, the outage is
    # counted up to the cutoff, as ongoing, never as zero.
    log = make_log("P" * 10 + "F" * 40, stop=False)
    cutoff = probe_time(30)
    result = report.summarize(
        log, [obs(1, probe_time(9.5), cutoff, recovered=False)],
        baseline_at=probe_time(4), cutoff=cutoff)
    migration = result.figures.migrations[0]
    assert migration.ongoing
    assert migration.status == report.STATUS_NOT_RECOVERED
    assert migration.downtime == pytest.approx(cutoff - probe_time(9.5), abs=0.02)
    assert migration.downtime > 0
    assert result.figures.total_downtime == migration.downtime
    assert any("recovery timeout" in note for note in result.notes)


def test_outage_still_going_at_stop_counts_until_stop():
    log = make_log("P" * 10 + "F" * 5)  # #stop written one period after the last probe
    result = report.summarize(log, [obs(1, probe_time(9.5), None, recovered=False,
                                        error="boom")], baseline_at=probe_time(4))
    migration = result.figures.migrations[0]
    assert migration.ongoing
    assert migration.downtime == pytest.approx(probe_time(15) - probe_time(9.5), abs=0.01)
    assert migration.status == "failed: boom"


def test_no_log_means_not_measured():
    result = report.summarize(None, [], baseline_at=None)
    assert not result.figures.measured
    assert result.notes


def test_no_baseline_means_not_measured_and_says_why():
    result = report.summarize(make_log("F" * 20, reason="http:404"), [], baseline_at=None)
    assert not result.figures.measured
    assert result.figures.total_downtime == 0
    assert any("HTTP 404" in note for note in result.notes)


def test_rate_limiting_is_called_out():
    log = make_log("P" * 10 + "FF" + "P" * 5, reason="http:429")
    result = report.summarize(log, [obs(1, probe_time(9.5), probe_time(16))],
                              baseline_at=probe_time(4))
    assert any("429" in note and "rate limiting" in note for note in result.notes)


def test_timeline_is_a_compressed_step_line_with_windows():
    log = make_log("P" * 10 + "FFF" + "P" * 10)
    result = report.summarize(log, [obs(1, probe_time(9.5), probe_time(20))],
                              baseline_at=probe_time(4))
    (probe_name, probes), (window_name, windows) = result.timeline
    assert probe_name == report.PROBE_SERIES and window_name == report.WINDOW_SERIES
    assert probes == ((0.0, 1.0), (1.8, 1.0), (2.0, 0.0), (2.4, 0.0), (2.6, 1.0), (4.4, 1.0))
    assert (1.9, 0.5) in windows and (4.0, 0.5) in windows
    xs = [x for x, _ in windows]
    assert xs == sorted(xs)


# -- charts -----------------------------------------------------------------


def measured_report():
    log = make_log("P" * 12 + "FFFFF" + "P" * 10 + "FFF" + "P" * 10)
    observations = [
        obs(1, probe_time(11.5), probe_time(25), duration=3.0, pause=0.3, pause_error=0.02),
        obs(2, probe_time(26.5), probe_time(38), duration=2.5, pause=None),
    ]
    return report.summarize(log, observations, baseline_at=probe_time(4), notes=["hello"])


REPORTS = {
    "measured": measured_report,
    "unmeasured": lambda: report.summarize(None, [], baseline_at=None),
    "no-baseline": lambda: report.summarize(make_log("F" * 5), [], baseline_at=None),
}


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_chart_passes_rallys_validation(name):
    additive, complete = report.charts(REPORTS[name]())
    for chart in additive:
        assert rally_charts.validate_output("additive", chart) is None, chart
    for chart in complete:
        assert rally_charts.validate_output("complete", chart) is None, chart
    json.dumps([additive, complete])  # stored by Rally as JSON


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_additive_titles_and_order_never_change(name):
    additive, _ = report.charts(REPORTS[name]())
    assert tuple(c["title"] for c in additive) == report.ADDITIVE_TITLES
    assert [c["chart_plugin"] for c in additive] == ["Lines", "Lines", "StatsTable", "StatsTable",
                                                     "Lines"]


def test_charts_render_with_rallys_chart_plugins():
    """Feed three iterations to Rally's own chart classes, as the HTML report does."""
    workload = {"total_iteration_count": 3}
    iterations = [report.charts(REPORTS[n]()) for n in ("measured", "unmeasured", "measured")]
    rendered = []
    for position, title in enumerate(report.ADDITIVE_TITLES):
        first = iterations[0][0][position]
        chart_cls = {"Lines": rally_charts.OutputLinesChart,
                     "StatsTable": rally_charts.OutputStatsTable}[first["chart_plugin"]]
        chart = chart_cls(workload, title=title)
        for additive, _ in iterations:
            assert additive[position]["title"] == title
            chart.add_iteration(additive[position]["data"])
        rendered.append(chart.render())
    stats = rendered[2]["data"]
    assert stats["cols"][1:6] == ["Min (sec)", "Median (sec)", "90%ile (sec)", "95%ile (sec)",
                                  "Max (sec)"]
    rows = {row[0]: row for row in stats["rows"]}
    assert rows[report.ALL_MIGRATIONS][-1] == 4  # 2 measured iterations x 2 migrations
    assert rows[report.migration_row_name(1)][-1] == 2
    for complete in iterations[0][1]:
        plugin = {"Lines": rally_charts.OutputLinesChart, "Table": rally_charts.OutputTable,
                  "TextArea": rally_charts.OutputTextArea}[complete["chart_plugin"]]
        assert plugin.render_complete_data(complete)["title"] == complete["title"]


def test_migrations_table_columns_and_missing_values():
    _, complete = report.charts(measured_report())
    table = next(c for c in complete if c["title"] == report.MIGRATIONS_TITLE)
    cols = table["data"]["cols"]
    assert cols == [header for _, header in report.MIGRATION_COLUMNS]
    for expected in ("Source host", "Target host", "Live migration (s)", "Downtime (s)",
                     "Longest outage (s)", "First failure after request (s)",
                     "Recovered after request (s)", "Estimated pause (s)",
                     "Downtime error bound ± (s)", "Ongoing"):
        assert expected in cols
    second = dict(zip(cols, table["data"]["rows"][1]))
    assert second["Estimated pause (s)"] == "n/a"
    assert second["Ongoing"] == "no"


# -- extraction -------------------------------------------------------------


def output_of(iteration_report):
    additive, complete = report.charts(iteration_report)
    return json.loads(json.dumps({"additive": additive, "complete": complete}))


def test_extract_is_the_inverse_of_charts():
    original = measured_report()
    extracted = report.extract(output_of(original))
    assert extracted == original.figures


def test_extract_ignores_other_charts_and_their_order():
    output = output_of(measured_report())
    profiler = {"title": "OSProfiler Trace-ID", "chart_plugin": "OSProfiler", "data": {}}
    output["complete"].insert(0, profiler)
    output["additive"].reverse()
    assert report.extract(output) == measured_report().figures


def test_extract_unmeasured_and_missing():
    figures = report.extract(output_of(report.summarize(None, [], baseline_at=None)))
    assert figures is not None and not figures.measured
    assert report.extract({"additive": [], "complete": []}) is None
    assert report.extract(None) is None
    assert report.extract({"additive": [{"title": report.DOWNTIME_TITLE, "data": "junk"}]}) is None


# -- failed migrations ------------------------------------------------------


def failed_second_migration_report():
    # Migration 1 (probe 12): 5 failed probes; migration 2 (probe 26.5) is
    # rejected, and a 3-probe outage follows in its window.
    log = make_log("P" * 12 + "FFFFF" + "P" * 10 + "FFF" + "P" * 10)
    observations = [
        obs(1, probe_time(11.5), probe_time(25), duration=3.0, pause=0.3, pause_error=0.02),
        obs(2, probe_time(26.5), probe_time(26.6), target_host=None, recovered=False,
            error="No valid host was found"),
    ]
    return report.summarize(log, observations, baseline_at=probe_time(4))


def test_failed_migration_is_left_out_of_every_downtime_figure():
    result = failed_second_migration_report()
    figures = result.figures
    assert figures.measured
    assert [m.index for m in figures.measured_migrations] == [1]
    # Only migration 1's outage counts, in the totals too.
    assert figures.total_downtime == pytest.approx(1.0, abs=0.01)
    assert figures.outage_count == 1
    additive, complete = report.charts(result)
    per_migration = next(c for c in additive if c["title"] == report.PER_MIGRATION_TITLE)
    assert per_migration["data"] == [[report.ALL_MIGRATIONS, figures.migrations[0].downtime],
                                     [report.migration_row_name(1),
                                      figures.migrations[0].downtime]]
    outages = next(c for c in additive if c["title"] == report.OUTAGES_TITLE)
    assert [report.MEASURED_MIGRATIONS, 1] in outages["data"]
    assert any("migration 2 failed" in note and "not counted" in note for note in result.notes)


def test_failed_migration_is_shown_as_failed_in_the_table():
    _, complete = report.charts(failed_second_migration_report())
    table = next(c for c in complete if c["title"] == report.MIGRATIONS_TITLE)
    rows = [dict(zip(table["data"]["cols"], row)) for row in table["data"]["rows"]]
    assert [row["#"] for row in rows] == [1, 2]
    assert rows[0]["Status"] == report.STATUS_OK
    assert rows[1]["Status"] == "failed: No valid host was found"


def test_iteration_whose_only_migration_failed_is_not_measured():
    log = make_log("P" * 12 + "P" * 10)
    result = report.summarize(
        log, [obs(1, probe_time(11.5), probe_time(11.6), target_host=None, recovered=False,
                  error="rejected")], baseline_at=probe_time(4))
    assert not result.figures.measured
    assert result.figures.measured_migrations == ()
    (row,) = result.figures.migrations
    assert row.failed and row.status == "failed: rejected"
    extracted = report.extract(output_of(result))
    assert extracted == result.figures and not extracted.measured
    _, complete = report.charts(result)
    table = next(c for c in complete if c["title"] == report.MIGRATIONS_TITLE)
    assert len(table["data"]["rows"]) == 1


def test_extract_round_trips_failed_migrations():
    original = failed_second_migration_report()
    extracted = report.extract(output_of(original))
    assert extracted == original.figures
    assert [m.failed for m in extracted.migrations] == [False, True]


def test_extract_does_not_trust_an_older_output_counting_failed_migrations():
    # Before failed migrations were left out, the output said "1 measured".
    figures = report.IterationFigures(
        measured=True, migrations=(report.MigrationFigures(index=1, status="failed: boom"),))
    output = output_of(report.IterationReport(figures))
    outages = next(c for c in output["additive"] if c["title"] == report.OUTAGES_TITLE)
    outages["data"] = [[report.OUTAGE_COUNT, 0], [report.MEASURED_MIGRATIONS, 1]]
    extracted = report.extract(output)
    assert not extracted.measured and extracted.measured_migrations == ()
