"""SLA max_metadata_downtime: config schema, pass/fail, details, merge, no-data iterations."""

import jsonschema
import pytest
import rally.plugins
from rally.task import sla

from rally_metadata_plugin.core import report
from rally_metadata_plugin.plugins import sla as metadata_sla

rally.plugins.load()

NAME = "max_metadata_downtime"


def iteration(timestamp, downtimes, outage=None, error=None):
    """An iteration result whose output carries ``downtimes`` (one per migration)."""
    migrations = tuple(report.MigrationFigures(index=i, source_host="a", target_host="b",
                                               downtime=d, max_outage=d,
                                               outage_count=1 if d else 0)
                       for i, d in enumerate(downtimes, 1))
    figures = report.IterationFigures(
        measured=bool(downtimes), total_downtime=sum(downtimes),
        max_outage=outage if outage is not None else max(downtimes, default=0.0),
        outage_count=sum(1 for d in downtimes if d), migrations=migrations)
    additive, complete = report.charts(report.IterationReport(figures))
    return {"timestamp": timestamp, "duration": 10.0, "idle_duration": 0.0,
            "error": error or [], "atomic_actions": [],
            "output": {"additive": additive, "complete": complete}}


def unmeasured(timestamp):
    return {"timestamp": timestamp, "duration": 1.0, "idle_duration": 0.0,
            "error": ["GetResourceErrorStatus", "boot failed", ""], "atomic_actions": [],
            "output": {"additive": [], "complete": []}}


def checker(config):
    return sla.SLA.get(NAME)(config)


@pytest.mark.parametrize("config", [6.0, 0, 3, {"per_migration": 6.0},
                                    {"per_iteration": 10, "max_outage": 2.5},
                                    {"per_migration": 1, "per_iteration": 2, "max_outage": 3}])
def test_schema_accepts(config):
    jsonschema.validate(config, metadata_sla.MaxMetadataDowntime.CONFIG_SCHEMA)
    assert sla.SLA.validate(NAME, None, None, config) == []


@pytest.mark.parametrize("config", [-1, "6", None, True, [], {}, {"per_migraton": 6},
                                    {"per_migration": -0.1}, {"max_outage": "2"},
                                    {"per_migration": 6, "extra": 1}])
def test_schema_rejects(config):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, metadata_sla.MaxMetadataDowntime.CONFIG_SCHEMA)
    assert sla.SLA.validate(NAME, None, None, config)


def test_every_key_is_described():
    schema = metadata_sla.MaxMetadataDowntime.CONFIG_SCHEMA
    assert set(schema["properties"]) == {"per_migration", "per_iteration", "max_outage"}
    assert schema["additionalProperties"] is False and schema["minProperties"] == 1
    for prop in schema["properties"].values():
        assert prop["description"].startswith("Seconds")


def test_a_number_limits_each_migration():
    s = checker(6.0)
    assert s.add_iteration(iteration(1.0, [1.0, 5.9, 2.0]))
    assert s.add_iteration(iteration(2.0, [4.0, 4.0, 4.0]))  # total 12 > 6 is fine
    assert s.result()["success"]
    assert not s.add_iteration(iteration(3.0, [0.5, 6.5, 0.1]))
    assert not s.result()["success"]
    details = s.details()
    assert "6.50s > 6.00s" in details
    assert "iteration 3, migration 2" in details
    assert details.endswith("Failed")


def test_object_limits_each_criterion():
    s = checker({"per_iteration": 5.0, "max_outage": 2.0})
    assert s.add_iteration(iteration(1.0, [1.0, 1.0], outage=1.0))
    assert not s.add_iteration(iteration(2.0, [3.0, 3.0], outage=1.5))
    details = s.details()
    assert "total downtime of any iteration 6.00s > 5.00s (worst: iteration 2)" in details
    assert "longest single outage 1.50s <= 2.00s" in details
    assert "single migration" not in details


def test_iteration_without_meter_data_is_not_a_pass():
    s = checker(6.0)
    assert s.add_iteration(iteration(1.0, [0.2]))
    assert not s.add_iteration(unmeasured(2.0))
    assert "1 of 2 iteration(s) have no metadata measurement (2)" in s.details()
    assert not checker(6.0).add_iteration(iteration(1.0, []))  # no migration measured


def test_iteration_numbers_follow_start_time_not_arrival():
    s = checker(1.0)
    s.add_iteration(iteration(30.0, [0.1]))
    s.add_iteration(iteration(10.0, [3.0]))
    s.add_iteration(iteration(20.0, [0.2]))
    assert "iteration 1, migration 1" in s.details()


def test_merge_equals_adding_everything_to_one():
    iterations = [iteration(1.0, [1.0, 2.0]), iteration(2.0, [7.0]),
                  unmeasured(3.0), iteration(4.0, [0.5])]
    whole = checker({"per_migration": 6.0, "per_iteration": 8.0})
    for it in iterations:
        whole.add_iteration(it)
    left, right = (checker({"per_migration": 6.0, "per_iteration": 8.0}) for _ in range(2))
    for it in iterations[:2]:
        left.add_iteration(it)
    for it in iterations[2:]:
        right.add_iteration(it)
    assert left.merge(right) is whole.success is False
    assert left.details() == whole.details()

    ok_left, ok_right = checker(6.0), checker(6.0)
    ok_left.add_iteration(iteration(1.0, [1.0]))
    ok_right.add_iteration(iteration(2.0, [2.0]))
    assert ok_left.merge(ok_right)
    assert "2.00s <= 6.00s (worst: iteration 2, migration 1)" in ok_left.details()


def test_no_iterations_passes_vacuously():
    s = checker(6.0)
    assert s.result()["success"]
    assert "no data" in s.details()


def iteration_with_statuses(timestamp, migrations):
    """An iteration whose migrations are (downtime, status) pairs."""
    rows = tuple(report.MigrationFigures(index=i, source_host="a", target_host="b",
                                         downtime=d, max_outage=d, outage_count=1 if d else 0,
                                         status=status)
                 for i, (d, status) in enumerate(migrations, 1))
    figures = report.IterationFigures(measured=True, total_downtime=0.0, migrations=rows)
    additive, complete = report.charts(report.IterationReport(figures))
    return {"timestamp": timestamp, "duration": 10.0, "idle_duration": 0.0,
            "error": ["MigrationError", "boom", ""], "atomic_actions": [],
            "output": {"additive": additive, "complete": complete}}


def test_iteration_whose_only_migration_failed_is_not_measured():
    s = checker(6.0)
    assert not s.add_iteration(iteration_with_statuses(1.0, [(0.0, "failed: rejected")]))
    assert "1 of 1 iteration(s) have no metadata measurement (1)" in s.details()
    assert "none of their live migrations succeeded" in s.details()


def test_failed_migration_is_not_a_downtime_sample():
    s = checker(6.0)
    assert s.add_iteration(iteration_with_statuses(
        1.0, [(1.5, report.STATUS_OK), (9.0, "failed: rolled back")]))
    assert "1.50s <= 6.00s (worst: iteration 1, migration 1)" in s.details()
    low = checker(0.5)
    assert not low.add_iteration(iteration_with_statuses(
        1.0, [(0.0, "failed: rejected"), (1.0, report.STATUS_OK)]))
    assert "1.00s > 0.50s (worst: iteration 1, migration 2)" in low.details()


# -- max_network_downtime: the same shape, on the network meter's figures --------


def network_iteration(timestamp, network, metadata=None, outage=None, statuses=None):
    """An iteration whose migrations had ``network`` downtimes (None: not measured)."""
    metadata = metadata or [0.1] * len(network)
    statuses = statuses or [report.STATUS_OK] * len(network)
    rows = tuple(report.MigrationFigures(index=i, source_host="a", target_host="b",
                                         downtime=m, max_outage=m, status=status,
                                         network_downtime=n, network_downtime_error=0.1,
                                         network_max_outage=n)
                 for i, (m, n, status) in enumerate(zip(metadata, network, statuses), 1))
    counted = [n for n, status in zip(network, statuses)
               if n is not None and not status.startswith(report.STATUS_FAILED_PREFIX)]
    figures = report.IterationFigures(
        measured=True, total_downtime=sum(metadata), max_outage=max(metadata),
        migrations=rows,
        network_downtime=None if all(n is None for n in network) else sum(counted),
        network_max_outage=outage if outage is not None else max(counted, default=0.0))
    additive, complete = report.charts(report.IterationReport(figures))
    return {"timestamp": timestamp, "duration": 10.0, "idle_duration": 0.0, "error": [],
            "atomic_actions": [], "output": {"additive": additive, "complete": complete}}


def network_checker(config):
    return sla.SLA.get(metadata_sla.NETWORK_NAME)(config)


@pytest.mark.parametrize("config", [5.0, {"per_migration": 5, "per_iteration": 9,
                                          "max_outage": 3}])
def test_network_schema_has_the_same_shape(config):
    assert sla.SLA.validate(metadata_sla.NETWORK_NAME, None, None, config) == []
    assert sla.SLA.validate(metadata_sla.NETWORK_NAME, None, None, {"per_migraton": 5})
    schema = metadata_sla.MaxNetworkDowntime.CONFIG_SCHEMA
    assert set(schema["properties"]) == {"per_migration", "per_iteration", "max_outage"}
    assert all("network" in p["description"] for p in schema["properties"].values())


def test_network_limits_read_the_network_figures_only():
    s = network_checker(2.0)
    assert s.add_iteration(network_iteration(1.0, [1.0, 1.5], metadata=[9.0, 9.0]))
    assert not s.add_iteration(network_iteration(2.0, [0.5, 2.5]))
    details = s.details()
    assert details.startswith("Network downtime: ")
    assert "2.50s > 2.00s (worst: iteration 2, migration 2)" in details
    by_iteration = network_checker({"per_iteration": 2.0, "max_outage": 1.2})
    assert not by_iteration.add_iteration(network_iteration(1.0, [1.0, 1.5], outage=1.5))
    assert "total downtime of any iteration 2.50s > 2.00s" in by_iteration.details()
    assert "longest single outage 1.50s > 1.20s" in by_iteration.details()


def test_network_sla_fails_iterations_without_a_network_measurement():
    s = network_checker(5.0)
    assert not s.add_iteration(network_iteration(1.0, [None, None]))  # network_probe none
    assert "have no network measurement (1): the network meter was off" in s.details()
    # ... while the metadata SLA is content with the same iteration.
    assert checker(6.0).add_iteration(network_iteration(1.0, [None, None]))
    failed = network_checker(5.0)
    assert not failed.add_iteration(network_iteration(1.0, [9.0], statuses=["failed: x"]))


def test_network_sla_ignores_failed_migrations():
    s = network_checker(2.0)
    assert s.add_iteration(network_iteration(1.0, [1.0, 9.0],
                                             statuses=[report.STATUS_OK, "failed: x"]))
