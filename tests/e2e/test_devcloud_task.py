"""End to end: the README's main command, real rally CLI, real devcloud.

Each test runs ``tools/devcloud_task.py`` exactly as a user does (with this
interpreter's virtualenv), then checks the exit status, the Rally results
and the devcloud's ground truth and leftovers.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from rally_metadata_plugin.adapters import live_migration
from rally_metadata_plugin.core import report
from rally_metadata_plugin.devcloud import cloud

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAIN_COMMAND = ROOT / "tools" / "devcloud_task.py"

#: A probe's start time is read just before the HTTP client is spawned; the
#: request reaches the devcloud a few milliseconds later, more when five
#: meters share two cores.  The estimate's bound covers the probe schedule,
#: not that spawn latency, so allow for it explicitly.
SPAWN_LATENCY = 0.05


def run_main_command(out: pathlib.Path, *args: str, timeout: float = 600):
    env = dict(os.environ, RMP_VENV=sys.prefix)
    command = [sys.executable, str(MAIN_COMMAND), "--out", str(out), "--quiet", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    return result


def workload(out: pathlib.Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    (task,) = results["tasks"]
    (subtask,) = task["subtasks"]
    (load,) = subtask["workloads"]
    return load


def measured_migrations(load: dict) -> list[report.MigrationFigures]:
    migrations = []
    for iteration in load["data"]:
        figures = report.extract(iteration["output"])
        assert figures is not None and figures.measured, iteration["error"]
        migrations.extend(figures.migrations)
    return migrations


def truth_by_migration(out: pathlib.Path) -> dict[tuple[str, int], dict]:
    lines = (out / "truth.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {(r["server_id"], r["migration_index"]): r for r in records}


def assert_nothing_left_behind(out: pathlib.Path) -> None:
    leftovers = json.loads((out / "devcloud" / "leftovers.json").read_text())
    assert all(not ids for ids in leftovers["resources"].values()), leftovers["resources"]
    assert leftovers["processes_of_deleted_servers"] == {}
    assert leftovers["processes_after_stop"] == {}
    # the process guests' /tmp is this machine's: every meter took its files with it
    homes = out / "devcloud" / "guests"
    servers = sorted(home.name for home in homes.iterdir()) if homes.is_dir() else []
    left = [path for server in servers
            if (path := pathlib.Path(f"/tmp/rally-metadata-meter-{server[:8]}")).exists()]
    assert left == [], left


def observable_downtime(record: dict) -> tuple[float, float]:
    """The outage as a devcloud guest can observe it: (shortest, longest).

    The outage starts at the switchover, while the guest is frozen.  A real
    guest's clock stops during that pause, so the frozen time is invisible
    to it; a devcloud guest's clock (the host's) keeps running, and a probe
    that read the clock just before the freeze sends its request after the
    thaw.  The guest cannot tell the frozen time before the outage from the
    outage, so the truth it can be held to spans that frozen time.
    """
    duration = record["outage_end"] - record["outage_start"]
    frozen_before = max(0.0, min(record["outage_start"], record["pause_end"])
                        - record["pause_start"])
    return duration, duration + frozen_before


def assert_measurements_match_truth(out: pathlib.Path, expected_count: int) -> list[float]:
    """Every migration measured within its error bound of the truth.

    Returns |measured - outage duration| per migration, for the record.
    """
    truth = truth_by_migration(out)
    migrations = measured_migrations(workload(out))
    assert len(migrations) == expected_count
    assert len(truth) == expected_count
    errors = []
    for migration in migrations:
        record = truth[(migration.server, migration.index)]
        assert record["status"] == "completed"
        assert (migration.source_host, migration.target_host) == (
            record["source"], record["destination"])
        shortest, longest = observable_downtime(record)
        error = max(shortest - migration.downtime, migration.downtime - longest, 0.0)
        assert error <= migration.downtime_error + SPAWN_LATENCY, (
            f"migration {migration.index} of {migration.server}: measured "
            f"{migration.downtime} +/- {migration.downtime_error} s, true {shortest:.3f} to "
            f"{longest:.3f} s ({record['kind']})")
        errors.append(abs(migration.downtime - shortest))
    return errors


def assert_network_matches_truth(out: pathlib.Path, expected_count: int) -> list[tuple]:
    """Every migration's network downtime (the network meter, tcp on the devcloud)
    within its error bound of the truth: the time the floating IP refused
    connections (none when the profile has no network loss).

    Returns (measured, bound, truth) per migration, for the record.
    """
    truth = truth_by_migration(out)
    migrations = measured_migrations(workload(out))
    assert len(migrations) == expected_count
    figures = []
    for migration in migrations:
        record = truth[(migration.server, migration.index)]
        start, end = record["network_loss_start"], record["network_loss_end"]
        true_loss = 0.0 if start is None else end - start
        assert migration.network_downtime is not None, migration
        error = abs(migration.network_downtime - true_loss)
        # The probe's start is read just before connect(); the bound covers the schedule.
        assert error <= migration.network_downtime_error + SPAWN_LATENCY, (
            f"migration {migration.index} of {migration.server}: network "
            f"{migration.network_downtime} +/- {migration.network_downtime_error} s, "
            f"true {true_loss:.3f} s")
        assert migration.network_ongoing is False
        figures.append((migration.network_downtime, migration.network_downtime_error,
                        round(true_loss, 3)))
    return figures


def network_meters_running() -> list[int]:
    """Network meter processes of this virtualenv still alive on this host."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"rally_metadata_plugin.adapters.network_meter" in cmdline and \
                cmdline[0].startswith(sys.prefix.encode()):
            found.append(int(entry.name))
    return found


class TaskRun:
    """One run of the main command: its exit status, output and directory."""

    def __init__(self, out: pathlib.Path, *args: str) -> None:
        self.out = out
        self.result = run_main_command(out, *args)

    @property
    def results_file(self) -> pathlib.Path:
        return self.out / "results.json"

    def describe(self) -> str:
        return self.result.stdout[-3000:] + self.result.stderr[-3000:]


# Runs shared by the tests of this module (each takes about a minute).
@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    return TaskRun(tmp_path_factory.mktemp("healthy") / "out", "--profile", "healthy",
                   "--seed", "11", "--task-args", '{"times": 3, "migrations": 3}')


@pytest.fixture(scope="module")
def healthy_other_seed(tmp_path_factory):
    return TaskRun(tmp_path_factory.mktemp("healthy-2") / "out", "--profile", "healthy",
                   "--seed", "12", "--task-args", '{"times": 3, "migrations": 3}')


@pytest.fixture(scope="module")
def ovn_slow(tmp_path_factory):
    return TaskRun(tmp_path_factory.mktemp("ovn-slow") / "out", "--profile", "ovn-slow",
                   "--seed", "5", "--task-args", '{"times": 2, "migrations": 2}')


def test_healthy_profile_passes_and_measures_the_truth(healthy):
    out, result = healthy.out, healthy.result
    assert result.returncode == 0, healthy.describe()
    assert "SLA PASS MetadataDowntime.boot_and_live_migrate max_metadata_downtime" in result.stdout
    assert f"HTML report: {out / 'report.html'}" in result.stdout

    load = workload(out)
    assert load["pass_sla"] and load["failed_iteration_count"] == 0
    errors = assert_measurements_match_truth(out, expected_count=9)
    print(f"healthy: |measured - truth| mean {sum(errors) / len(errors):.3f} s, "
          f"max {max(errors):.3f} s")
    # The network meter is on (tcp): no network loss in the truth, none measured.
    assert all(measured == 0.0 for measured, _, _ in
               assert_network_matches_truth(out, expected_count=9))
    page = (out / "report.html").read_text()
    for title in (*report.ADDITIVE_TITLES, report.MIGRATIONS_TITLE):
        assert title in page
    assert_nothing_left_behind(out)


def test_ovn_slow_profile_fails_the_sla_with_exit_status_2(ovn_slow):
    out, result = ovn_slow.out, ovn_slow.result
    assert result.returncode == 2, ovn_slow.describe()
    assert "SLA FAIL MetadataDowntime.boot_and_live_migrate max_metadata_downtime" in result.stdout
    assert "FAILED (SLA)" in result.stdout

    load = workload(out)
    (criterion,) = [s for s in load["sla_results"]["sla"]
                    if s["criterion"] == "max_metadata_downtime"]
    assert not criterion["success"]
    assert "worst: iteration 1, migration" in criterion["detail"] or \
        "worst: iteration 2, migration" in criterion["detail"]
    errors = assert_measurements_match_truth(out, expected_count=4)
    assert all(m.downtime > 6.0 for m in measured_migrations(load))
    print(f"ovn-slow: |measured - truth| mean {sum(errors) / len(errors):.3f} s, "
          f"max {max(errors):.3f} s")
    assert_nothing_left_behind(out)


def compare_command(*args: str) -> subprocess.CompletedProcess:
    meter = pathlib.Path(sys.prefix) / "bin" / "rally-metadata-meter"
    return subprocess.run([str(meter), "compare", *args], capture_output=True, text=True,
                          timeout=300)


def test_compare_healthy_vs_ovn_slow_is_a_regression(healthy, ovn_slow, tmp_path):
    page = tmp_path / "compare.html"
    result = compare_command(str(healthy.results_file), str(ovn_slow.results_file),
                             "--html", str(page))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "verdict: regression" in result.stdout
    text = page.read_text()
    # downtime, longest outage, downtime by migration number, and network downtime (the
    # devcloud task runs the network meter)
    assert text.count("<svg") == 4 and "regression" in text
    assert "Network downtime per migration: every migration" in text

    as_json = compare_command(str(healthy.results_file), str(ovn_slow.results_file), "--json")
    document = json.loads(as_json.stdout)
    downtime = [c for c in document["comparisons"] if c["metric"] == "downtime"][0]
    assert downtime["verdict"] == "regression"
    assert downtime["baseline"]["count"] == 9 and downtime["candidate_summary"]["count"] == 4


def test_compare_healthy_with_another_seed_is_no_significant_change(healthy, healthy_other_seed):
    assert healthy_other_seed.result.returncode == 0, healthy_other_seed.describe()
    result = compare_command(str(healthy.results_file), str(healthy_other_seed.results_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: no significant change" in result.stdout


def test_compare_reads_task_uuids_from_the_rally_database(healthy):
    uuid = (healthy.out / "task_uuid").read_text().strip()
    env = dict(os.environ, HOME=str(healthy.out / "home"))
    meter = pathlib.Path(sys.prefix) / "bin" / "rally-metadata-meter"
    result = subprocess.run([str(meter), "compare", uuid, str(healthy.results_file),
                             "--rally-config", str(healthy.out / "rally.conf")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"baseline: {uuid} (task {uuid})" in result.stdout
    missing = "00000000-0000-0000-0000-000000000000"
    result = subprocess.run([str(meter), "compare", missing, str(healthy.results_file),
                             "--rally-config", str(healthy.out / "rally.conf")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert missing in result.stderr


def test_compare_rejects_malformed_input_with_exit_2(healthy, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"tasks": [')
    result = compare_command(str(healthy.results_file), str(broken))
    assert result.returncode == 2
    assert "not JSON" in result.stderr
    result = compare_command(str(healthy.results_file), str(healthy.out / "truth.jsonl"))
    assert result.returncode == 2


def test_rally_reports_line_up_across_runs(healthy, healthy_other_seed, tmp_path):
    """Both runs' reports, Rally's side-by-side report and trends carry our charts."""
    for run in (healthy, healthy_other_seed):
        page = (run.out / "report.html").read_text()
        for title in (*report.ADDITIVE_TITLES, report.MIGRATIONS_TITLE):
            assert title in page
    env = dict(os.environ, HOME=str(tmp_path))
    rally = pathlib.Path(sys.prefix) / "bin" / "rally"
    config = healthy.out / "rally.conf"
    side_by_side, trends = tmp_path / "side-by-side.html", tmp_path / "trends.html"
    inputs = [str(healthy.results_file), str(healthy_other_seed.results_file)]
    for command in (["task", "report", *inputs, "--out", str(side_by_side)],
                    ["task", "trends", *inputs, "--out", str(trends)]):
        result = subprocess.run([str(rally), "--config-file", str(config), *command],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    page = side_by_side.read_text()
    for title in report.ADDITIVE_TITLES:
        assert title in page
    # Identical atomic action names in both runs: one trend line each.
    trend_page = trends.read_text()
    for action in ("metadata.live_migrations", "metadata.baseline", "nova.boot_server"):
        assert action in trend_page
    for run in (healthy, healthy_other_seed):
        names = [[a["name"] for a in it["atomic_actions"]] for it in workload(run.out)["data"]]
        assert all(n == names[0] for n in names)
    first = [a["name"] for a in workload(healthy.out)["data"][0]["atomic_actions"]]
    second = [a["name"] for a in workload(healthy_other_seed.out)["data"][0]["atomic_actions"]]
    assert first == second


def test_ten_iterations_at_concurrency_five(tmp_path):
    out = tmp_path / "concurrent"
    result = run_main_command(out, "--profile", "healthy", "--seed", "2", "--task-args",
                              '{"times": 10, "concurrency": 5, "migrations": 2}')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    load = workload(out)
    assert load["total_iteration_count"] == 10
    assert load["failed_iteration_count"] == 0
    assert [it["error"] for it in load["data"]] == [[]] * 10
    assert_measurements_match_truth(out, expected_count=20)
    assert_nothing_left_behind(out)


def test_metadata_that_never_recovers_is_ongoing_never_zero(tmp_path):
    out = tmp_path / "broken"
    result = run_main_command(out, "--profile", "broken", "--seed", "1",
                              "--task-args", '{"times": 1, "migrations": 2}')
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    (record,) = truth_by_migration(out).values()
    assert record["outage_end"] is None  # the premise: this seed draws a lasting outage
    load = workload(out)
    (iteration,) = load["data"]
    assert iteration["error"][0] == "MetadataNotRecovered"
    assert "did not recover within 15 s after live migration 1" in iteration["error"][1]
    (migration,) = report.extract(iteration["output"]).migrations
    assert migration.ongoing and migration.status == report.STATUS_NOT_RECOVERED
    # Counted up to the recovery timeout (15 s after nova finished), never as zero.
    nova_done = record["completed_at"] - record["outage_start"]
    assert migration.downtime >= 15.0 + nova_done - migration.downtime_error - SPAWN_LATENCY
    failed = {s["criterion"] for s in load["sla_results"]["sla"] if not s["success"]}
    assert failed == {"max_metadata_downtime", "failure_rate"}
    assert_nothing_left_behind(out)


def test_server_in_error_fails_the_iteration_with_novas_fault(tmp_path):
    out = tmp_path / "error"
    result = run_main_command(out, "--profile", "error", "--seed", "1",
                              "--task-args", '{"times": 1, "migrations": 2}')
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    (iteration,) = workload(out)["data"]
    assert "went to ERROR during live migration" in iteration["error"][1]
    assert "destination libvirt unreachable" in iteration["error"][1]
    (migration,) = report.extract(iteration["output"]).migrations
    assert migration.status.startswith("failed: ")
    assert_nothing_left_behind(out)


#: Long enough that a controller waiting it out is plain to see.
LONG_RECOVERY = '"recovery_timeout": 60'


def test_guest_reboot_fails_the_iteration_fast_saying_the_meter_is_gone(tmp_path):
    """The guest reboots at the switchover and the meter dies with it: the
    iteration fails at once saying so, never as metadata that did not
    recover within the recovery timeout."""
    out = tmp_path / "guest-reboot"
    result = run_main_command(out, "--profile", "guest-reboot", "--seed", "1", "--task-args",
                              f'{{"times": 1, "migrations": 2, {LONG_RECOVERY}}}')
    # A failed iteration fails the failure_rate SLA: rally task start exits 2.
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    (record,) = truth_by_migration(out).values()
    assert record["guest_reboot_at"] is not None and record["guest_processes_killed"] > 0
    (iteration,) = workload(out)["data"]
    kind, message = iteration["error"][:2]
    assert kind != "MetadataNotRecovered" and "did not recover" not in message, message
    text = message.lower()
    assert "meter" in text and any(word in text for word in (
        "gone", "not running", "killed", "died")), message
    assert iteration["duration"] < 20, iteration["duration"]  # well under 60 s
    assert_nothing_left_behind(out)


def test_ssh_dropped_at_the_switchover_costs_a_reconnect_not_the_recovery_timeout(tmp_path):
    """The floating IP moves and the controller's SSH connection goes silent
    for good: it gives up on it quickly, reconnects, and measures as usual."""
    out = tmp_path / "ssh-drop"
    result = run_main_command(out, "--profile", "ssh-drop", "--seed", "3", "--task-args",
                              f'{{"times": 2, "migrations": 2, {LONG_RECOVERY}}}')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    load = workload(out)
    assert load["failed_iteration_count"] == 0
    records = truth_by_migration(out).values()
    # the premise: every switchover silenced the connection the meter was read on
    assert all(r["ssh_blackhole_connections"] >= 1 and r["ssh_blackhole_end"] is None
               for r in records), records
    assert all(it["duration"] < 30 for it in load["data"]), [
        it["duration"] for it in load["data"]]
    assert_measurements_match_truth(out, expected_count=4)
    assert_nothing_left_behind(out)


def test_network_loss_is_measured_within_its_bound_and_fails_max_network_downtime(tmp_path):
    """The floating IP stops answering for 1-3 s at each switchover: the network
    meter (tcp on the devcloud) measures it beside metadata downtime, within
    its bound of the truth, and max_network_downtime fails as configured
    while max_metadata_downtime passes."""
    out = tmp_path / "network-loss"
    result = run_main_command(out, "--profile", "network-loss", "--seed", "1", "--task-args",
                              '{"times": 2, "migrations": 2, "max_network_downtime": 1.0}')
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SLA PASS MetadataDowntime.boot_and_live_migrate max_metadata_downtime" in \
        result.stdout
    assert "SLA FAIL MetadataDowntime.boot_and_live_migrate max_network_downtime" in \
        result.stdout
    load = workload(out)
    assert load["failed_iteration_count"] == 0
    (criterion,) = [s for s in load["sla_results"]["sla"]
                    if s["criterion"] == "max_network_downtime"]
    assert not criterion["success"] and "> 1.00s (worst: iteration" in criterion["detail"]
    figures = assert_network_matches_truth(out, expected_count=4)
    print("network-loss: (measured, bound, truth) per migration:", figures)
    assert all(truth >= 1.0 for _, _, truth in figures)  # the premise
    assert_measurements_match_truth(out, expected_count=4)
    for migration in measured_migrations(load):
        # the network came back after metadata did: the offset says so
        assert migration.metadata_recovered_after_network < 0
    page = (out / "report.html").read_text()
    assert report.NETWORK_DOWNTIME_TITLE in page and "Network downtime (s)" in page
    assert network_meters_running() == []
    assert_nothing_left_behind(out)


def test_icmp_on_the_devcloud_is_refused_never_a_silent_zero(tmp_path):
    """The devcloud's floating IPs are loopback addresses: ICMP would always pass."""
    out = tmp_path / "icmp"
    result = run_main_command(out, "--profile", "network-loss", "--seed", "1", "--task-args",
                              '{"times": 1, "migrations": 1, "network_probe": "icmp"}')
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    (iteration,) = workload(out)["data"]
    assert "loopback" in iteration["error"][1] and "network_probe 'tcp'" in iteration["error"][1]
    assert network_meters_running() == []
    assert_nothing_left_behind(out)


def test_unknown_profile_is_a_clear_error(tmp_path):
    result = run_main_command(tmp_path / "bad", "--profile", "no-such-profile", timeout=120)
    assert result.returncode != 0
    assert "no-such-profile" in result.stdout + result.stderr


@pytest.fixture(autouse=True)
def _needs_busybox_for_cirros_like_guests():
    # The devcloud's guests run busybox sh when it exists, /bin/sh otherwise;
    # both work, but CI must exercise the CirrOS-like path.
    if os.environ.get("RMP_REQUIRE_ALL") == "1":
        assert subprocess.run(["busybox", "true"]).returncode == 0


# -- nova behaviours of real clouds -------------------------------------------

SHARED_STORAGE = ("is not on shared storage: Shared storage live-migration requires either "
                  "shared storage or boot-from-volume with no local disks.")


def iteration_errors(out: pathlib.Path) -> list[list[str]]:
    return [iteration["error"] for iteration in workload(out)["data"]]


def test_local_disks_with_auto_negotiates_a_block_migration(tmp_path):
    """No microversion pinned: rally's 2.0 client could not say "auto" (it would
    send block_migration false, which local disks refuse); the scenario negotiates."""
    out = tmp_path / "local-disks"
    result = run_main_command(out, "--local-disks", "--nova-version", "none", "--seed", "3",
                              "--task-args", '{"times": 1, "migrations": 2}')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    spec = json.loads((out / "env.json").read_text())["openstack"]
    assert "nova" not in spec.get("api_info", {})
    assert live_migration.live_migrate_kwargs((2, 0), "auto", None)["block_migration"] is False
    requests_log = (out / "devcloud" / "requests.log").read_text()
    assert " GET /compute/v2.1 200 " in requests_log      # version discovery
    records = truth_by_migration(out).values()
    assert [(r["status"], r["block_migration"]) for r in records] == [("completed", True)] * 2
    assert_measurements_match_truth(out, expected_count=2)
    assert_nothing_left_behind(out)


def test_local_disks_refuse_a_shared_storage_migration(tmp_path):
    out = tmp_path / "local-disks-false"
    result = run_main_command(out, "--local-disks", "--nova-version", "none", "--task-args",
                              '{"times": 1, "migrations": 2, "block_migration": false}')
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILED (SLA)" in result.stdout
    ((kind, message, *_),) = iteration_errors(out)
    assert kind == "MigrationError"
    assert "Nova rejected the live migration" in message and SHARED_STORAGE in message
    (record,) = truth_by_migration(out).values()
    assert record["status"] == "error" and record["fault"]["precheck"]
    assert record["pause_start"] is None
    assert_nothing_left_behind(out)


def test_precheck_failure_fails_each_iteration_at_once(tmp_path):
    out = tmp_path / "precheck-fail"
    started = time.monotonic()
    result = run_main_command(out, "--profile", "precheck-fail", "--seed", "1")
    wall = time.monotonic() - started
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    timeout = cloud.RALLY_OPENSTACK_OPTIONS["nova_server_live_migrate_timeout"]
    print(f"precheck-fail: {wall:.1f} s for the whole run; live-migrate timeout {timeout} s")
    assert wall < timeout / 2
    load = workload(out)
    assert load["total_iteration_count"] == 2 == load["failed_iteration_count"]
    for iteration in load["data"]:
        kind, message = iteration["error"][:2]
        assert kind == "MigrationError"
        assert "No valid host was found" in message and "conductor_live_migrate_instance" in message
        (migrating,) = [a for a in iteration["atomic_actions"]
                        if a["name"] == "metadata.live_migrations"]
        assert migrating["finished_at"] - migrating["started_at"] < 10
    records = truth_by_migration(out).values()
    assert [r["status"] for r in records] == ["error", "error"]
    assert all(r["fault"]["exception"] == "NoValidHost" for r in records)
    assert_nothing_left_behind(out)


def test_migration_still_running_at_the_timeout_is_aborted(tmp_path):
    profile = tmp_path / "slow.yaml"
    profile.write_text("name: slow\ndescription: pre-copy longer than the timeout\n"
                       "precopy_seconds: 60\npause_seconds: 0.05\noutcomes:\n"
                       "  - {weight: 1, outage_seconds: 0.5, kinds: {refused: 1}}\n")
    out = tmp_path / "timeout"
    result = run_main_command(out, "--profile", str(profile), "--live-migrate-timeout", "3",
                              "--task-args", '{"times": 1, "migrations": 1}')
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "nova_server_live_migrate_timeout = 3" in (out / "rally.conf").read_text()
    ((kind, message, *_),) = iteration_errors(out)
    assert kind == "MigrationTimeout"
    assert "within 3 s" in message and "was aborted (server now ACTIVE)" in message
    (record,) = truth_by_migration(out).values()
    assert record["status"] == "cancelled"
    assert 3 <= record["aborted_at"] - record["requested_at"] < 15
    assert record["pause_start"] is None and record["outage_start"] is None
    assert_nothing_left_behind(out)
