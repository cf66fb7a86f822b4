"""The guests' CPU group (devcloud/cgroups.py), on a directory standing in
for a cgroup hierarchy: what is written where, joining through a real
shell, removal and the sweep of dead devclouds' groups."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from rally_metadata_plugin.devcloud import cgroups
from rally_metadata_plugin.testing.guest import BUSYBOX, DASH


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_group_is_made_with_its_weight_in_the_first_hierarchy_that_takes_it(tmp_path):
    v1, v2 = tmp_path / "cpu", tmp_path / "unified"
    v2.mkdir()
    group = cgroups.guest_cpu_group(
        owner=4242, hierarchies=[(v1, "cpu.shares"), (v2, "cpu.weight")])
    # v1 does not exist: the group lands in the second one
    assert group.path.parent == v2
    assert group.path.name.startswith("rally-metadata-devcloud-4242-")
    # the guests' weight on cgroup v2's scale
    assert (group.path / "cpu.weight").read_text() == f"{cgroups.V2_WEIGHT}\n"
    assert group.procs == group.path / "cgroup.procs"


def test_each_devcloud_of_a_process_gets_a_group_of_its_own(tmp_path):
    hierarchy = [(tmp_path, "cpu.shares")]
    first = cgroups.guest_cpu_group(owner=7, hierarchies=hierarchy)
    second = cgroups.guest_cpu_group(owner=7, hierarchies=hierarchy)
    assert first.path != second.path and first.path.exists() and second.path.exists()


def test_no_hierarchy_no_group_and_the_log_says_why(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    missing = tmp_path / "nowhere"
    assert cgroups.guest_cpu_group(
        owner=1, hierarchies=[(missing, "cpu.shares")]) is None
    assert "guests share the CPU" in caplog.text and "as equals" in caplog.text
    assert str(missing) in caplog.text
    assert cgroups.guest_cpu_group(owner=1, hierarchies=[]) is None
    assert "no cgroup 'cpu' controller" in caplog.text


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_the_command_runs_in_the_shell_that_joined(tmp_path, shell):
    binary = {"busybox": (BUSYBOX, "sh"), "dash": (DASH,)}[shell]
    if binary[0] is None:
        pytest.skip(f"{shell} is not installed")
    group = cgroups.CpuGroup(tmp_path / "a group", "cpu.shares", 256)
    group.create()
    out = subprocess.run(
        [*binary, "-c", group.join_command('echo "$$"; echo "$0" "$?"'), "a b"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    # the pid joined is the shell's that runs the command (no process of
    # its own): whatever the command forks is born in the group
    assert group.pids() == [int(out[0])]
    assert out[1] == "a b 0"               # arguments and $? as without it


def test_a_failed_join_still_runs_the_command(tmp_path):
    group = cgroups.CpuGroup(tmp_path / "absent", "cpu.shares", 256)
    result = subprocess.run([DASH or "/bin/sh", "-c",
                             group.join_command('echo ran "$?"')],
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ran 0\n", "")


def test_remove_and_sweep_of_dead_owners(tmp_path):
    dead = tmp_path / f"rally-metadata-devcloud-{_dead_pid()}-1"
    alive = tmp_path / f"rally-metadata-devcloud-{os.getpid()}-2"
    unknown = tmp_path / f"rally-metadata-devcloud-{_dead_pid()}-x"
    other = tmp_path / "someone-else-1"
    for directory in (dead, alive, unknown, other):
        directory.mkdir()
    cgroups.remove_stale(tmp_path)
    assert not dead.exists()
    assert alive.exists() and unknown.exists() and other.exists()
    group = cgroups.CpuGroup(alive, "cpu.shares", 256)
    assert group.remove() and not alive.exists()
    assert group.remove()                  # gone already: fine


def test_remove_gives_up_on_a_group_that_keeps_processes(tmp_path, caplog):
    group = cgroups.CpuGroup(tmp_path / "g", "cpu.shares", 256)
    group.create()
    (group.path / "cgroup.procs").write_text("123\n")
    # a plain directory with a file: rmdir fails as a busy cgroup's would
    assert not group.remove(timeout=0.05)
    assert "not removed" in caplog.text


def test_weights_on_both_scales_and_who_comes_first():
    assert cgroups.weight_for("cpu.shares", 1024) == 1024
    assert cgroups.weight_for("cpu.weight", 1024) == 100 == cgroups.V2_WEIGHT
    assert cgroups.weight_for("cpu.weight", 16384) == 1600
    assert cgroups.weight_for("cpu.weight", 10 ** 6) == 10000     # v2's maximum
    assert cgroups.weight_for("cpu.weight", 1) == 1
    # the metadata service before the guests, the guests as much as the
    # devcloud's or Rally's process
    assert cgroups.METADATA_SHARES > cgroups.V1_SHARES == cgroups.CONTROL_SHARES


def test_a_whole_process_moves_in_and_back_out(tmp_path):
    parent = tmp_path / "hierarchy"
    parent.mkdir()
    (parent / "cgroup.procs").write_text("")
    group = cgroups.cpu_group("Rally", cgroups.CONTROL_SHARES, owner=9,
                              hierarchies=[(parent, "cpu.shares")])
    assert (group.path / "cpu.shares").read_text() == f"{cgroups.CONTROL_SHARES}\n"
    assert group.add(4242)
    assert group.procs.read_text() == "4242\n"
    group.leave(4242)
    assert (parent / "cgroup.procs").read_text() == "4242\n"


def test_a_process_that_cannot_move_is_a_warning(tmp_path, caplog):
    group = cgroups.CpuGroup(tmp_path / "absent" / "group", "cpu.shares", 1024)
    assert not group.add(4242)
    group.leave(4242)
    assert "not moved to the CPU group" in caplog.text
    assert "not moved out of the CPU group" in caplog.text


def test_the_control_plane_is_grouped_beside_process_guests_only():
    assert cgroups.groups_control_plane("process")
    assert not cgroups.groups_control_plane("vm")
