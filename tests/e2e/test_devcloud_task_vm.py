"""End to end on VM guests: ``tools/devcloud_task.py --guests vm``.

The README's main command with real QEMU guests: every migration's
measured downtime within its error bound of the truth (what a guest whose
clock stops in the pause can see, :func:`accuracy.observable_outage`), the
scenario's estimated guest pause within 50 ms, and within its own bound, of
QEMU's downtime (of the guest's real stop for a paused migration), the SLA
verdict as exit status,
and nothing left behind: no server, no QEMU, no namespace, no device.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from prerequisites import require_vm_guests
from rally_metadata_plugin.devcloud import accuracy
from test_devcloud_task import TaskRun, assert_nothing_left_behind, workload

#: The issue's target for |estimated pause - QEMU's|, for every migration.
#: The scenario brackets the pause with the tightest of a few plain clock
#: readings on each side, taken the same way, so the time a guest command
#: takes to start (tens of milliseconds under TCG) cancels out; each estimate
#: is also held to its own reported bound.
PAUSE_TOLERANCE = 0.05
#: What SPAWN_LATENCY of test_devcloud_task.py allows for a process guest,
#: for an emulated (TCG) guest: a probe's start time is read before its HTTP
#: client is spawned, and under emulation that takes tens of milliseconds
#: (an in-guest loop of curl probes runs at one per 0.15 s here); right
#: after a migration the destination QEMU re-translates the guest's code and
#: it is slower still. An outage the guest could see for less than that can
#: pass between two probes' requests unseen (the vm-paused e2e once saw a
#: 0.185 s one measured as none).
VM_SPAWN_LATENCY = 0.2
#: the README's figure for the main command with --guests vm on 2 cores
WALL_SECONDS = 90.0


@pytest.fixture(scope="module", autouse=True)
def _vm_prerequisites():
    require_vm_guests()


@pytest.fixture(scope="module")
def vm_healthy(tmp_path_factory):
    return TaskRun(tmp_path_factory.mktemp("vm-healthy") / "out", "--guests", "vm",
                   "--profile", "healthy", "--seed", "11")


@pytest.fixture(scope="module")
def vm_ovn_slow(tmp_path_factory):
    return TaskRun(tmp_path_factory.mktemp("vm-ovn-slow") / "out", "--guests", "vm",
                   "--profile", "ovn-slow", "--seed", "5")


def accuracy_rows(out: pathlib.Path, expected: int) -> list[accuracy.MigrationAccuracy]:
    rows = accuracy.compare(json.loads((out / "results.json").read_text()),
                            accuracy.read_truth(out / "truth.jsonl"))
    assert len(rows) == expected
    return rows


def assert_measured_within_bounds(rows) -> None:
    for row in rows:
        assert row.downtime_error <= row.error_bound + VM_SPAWN_LATENCY, (
            f"migration {row.index} of {row.server}: measured {row.measured} +/- "
            f"{row.error_bound} s, the guest could see {row.true_shortest:.3f} s")


def assert_vm_left_nothing(out: pathlib.Path) -> None:
    assert_nothing_left_behind(out)
    leftovers = json.loads((out / "devcloud" / "leftovers.json").read_text())
    assert leftovers["vm_after_stop"] == {"qemu_processes": [], "namespaces": [],
                                          "links": []}


def assert_pause_estimated(rows, truth_of) -> list[float]:
    """Each estimate within its own bound and within :data:`PAUSE_TOLERANCE` of
    the truth; returns the errors."""
    errors = []
    for row in rows:
        error = abs(row.pause_estimate - truth_of(row))
        described = (f"migration {row.index} of {row.server}: estimated pause "
                     f"{row.pause_estimate} +/- {row.pause_bound} s, truth "
                     f"{truth_of(row):.3f} s")
        assert error <= row.pause_bound, described
        assert error <= PAUSE_TOLERANCE, described
        errors.append(error)
    return errors


def wall_seconds(stdout: str) -> float:
    return float(re.search(r"(PASSED|FAILED \(SLA\)) in ([\d.]+) s", stdout).group(2))


def test_vm_guests_healthy_measure_the_truth_and_the_pause(vm_healthy):
    out, result = vm_healthy.out, vm_healthy.result
    assert result.returncode == 0, vm_healthy.describe()
    assert workload(out)["pass_sla"]
    rows = accuracy_rows(out, expected=4)           # 2 iterations of 2 migrations
    assert_measured_within_bounds(rows)
    assert_pause_estimated(rows, lambda row: row.qemu_downtime)
    truth = accuracy.read_truth(out / "truth.jsonl")
    assert all(r["qemu"]["status"] == "completed" for r in truth)
    downtime = accuracy.summary(r.downtime_error for r in rows)
    pause = accuracy.summary(r.pause_error_vs_downtime for r in rows)
    print(f"vm healthy: |measured - truth| mean {downtime[0]:.3f} s max {downtime[1]:.3f} s; "
          f"|pause estimate - QEMU downtime| mean {pause[0]:.3f} s max {pause[1]:.3f} s; "
          f"wall {wall_seconds(result.stdout):.1f} s")
    assert wall_seconds(result.stdout) <= WALL_SECONDS * 2    # slack for a busy CI machine
    assert_vm_left_nothing(out)


def test_vm_guests_ovn_slow_fail_the_sla_with_exit_status_2(vm_ovn_slow):
    out, result = vm_ovn_slow.out, vm_ovn_slow.result
    assert result.returncode == 2, vm_ovn_slow.describe()
    assert "SLA FAIL MetadataDowntime.boot_and_live_migrate max_metadata_downtime" in result.stdout
    rows = accuracy_rows(out, expected=4)
    assert_measured_within_bounds(rows)
    assert all(row.measured > 6.0 for row in rows)
    assert_pause_estimated(rows, lambda row: row.qemu_downtime)
    assert_vm_left_nothing(out)


def test_vm_guests_paused_migration_pause_is_estimated(tmp_path):
    run = TaskRun(tmp_path / "out", "--guests", "vm", "--profile", "vm-paused", "--seed", "3",
                  "--task-args", '{"times": 1, "migrations": 2}')
    assert run.result.returncode == 0, run.describe()
    rows = accuracy_rows(run.out, expected=2)
    assert_measured_within_bounds(rows)
    assert all(row.stopped > 1.0 for row in rows), rows     # a multi-second stop
    # QEMU's downtime is only the last step there: the stop is the pause
    assert_pause_estimated(rows, lambda row: row.stopped)
    assert_vm_left_nothing(run.out)
