"""How a devcloud ends (:mod:`rally_metadata_plugin.devcloud.lifetime`):
with its parent, by signal, and with every process of its guests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from devcloud_helpers import boot_guest
from rally_metadata_plugin.devcloud import lifetime
from rally_metadata_plugin.devcloud.config import DevCloudConfig, default_users
from rally_metadata_plugin.devcloud.guests import TAG
from rally_metadata_plugin.devcloud.procfs import is_alive

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))

#: Starts argv[1:] and waits for it: the parent the tests kill.
PARENT = ("import subprocess, sys; "
          "subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL).wait()")


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _spawn_guest_loop(guests_root: Path, server_id: str) -> subprocess.Popen:
    """A tagged process that detaches a forking loop, as a guest's meter does."""
    home = guests_root / server_id
    home.mkdir(parents=True, exist_ok=True)
    script = ("setsid sh -c 'while :; do sleep 0.02 & wait; done' "
              "</dev/null >/dev/null 2>&1 & echo $!")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), TAG: server_id}
    return subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE,
                            start_new_session=True)


def test_kill_guest_processes_kills_detached_forking_guests_of_this_root_only(tmp_path):
    ours, other = str(uuid.uuid4()), str(uuid.uuid4())
    root = tmp_path / "guests"
    for server_id, base in ((ours, root), (other, tmp_path / "elsewhere")):
        _spawn_guest_loop(base, server_id).wait()
    assert _wait(lambda: ours in lifetime.guest_processes(root), 5)
    survivor = lifetime.guest_processes(tmp_path / "elsewhere")[other]
    try:
        killed = lifetime.kill_guest_processes(root)
        assert killed
        assert lifetime.guest_processes(root) == {}
        assert all(not is_alive(pid) for pid in killed)
        assert any(is_alive(pid) for pid in survivor)
    finally:
        lifetime.kill_guest_processes(tmp_path / "elsewhere")


CHILD = textwrap.dedent("""
    import os, sys, time
    from rally_metadata_plugin.devcloud import lifetime
    if sys.argv[2] == "watchdog-only":
        lifetime.set_parent_death_signal = lambda signum: False
    def note(what):
        with open(sys.argv[1], "w") as f:
            f.write(what)
        os._exit(0)
    lifetime.handle_stop_signals(lambda signum, frame: note(lifetime.signal_name(signum)))
    lifetime.stop_with_parent(lambda: note("watchdog"), interval=0.1)
    open(sys.argv[1] + ".ready", "w").close()
    time.sleep(60)
""")


@pytest.mark.parametrize("mode, expected", [("prctl", "SIGTERM"),
                                            ("watchdog-only", "watchdog")])
def test_stop_with_parent(tmp_path, mode, expected):
    note = tmp_path / "note"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, sys.executable, "-c", CHILD,
                               str(note), mode], env=ENV)
    try:
        assert _wait(lambda: Path(f"{note}.ready").exists(), 20)
        parent.kill()
        parent.wait()
        assert _wait(note.exists, 3), "the child did not notice its parent's death"
        assert note.read_text() == expected
    finally:
        parent.kill()


def test_serve_stops_with_its_parent_and_kills_its_guests(tmp_path):
    cidr = "127.0.12.0/24"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, sys.executable, "-m", "rally_metadata_plugin.devcloud.cli",
         "serve", "--profile", "healthy", "--state-dir", str(tmp_path), "--port", "0",
         "--floating-cidr", cidr], env=ENV)
    devcloud = None
    try:
        assert _wait((tmp_path / "ready").exists, 20)
        info = json.loads((tmp_path / "ready").read_text())
        devcloud = info["pid"]
        remote = SimpleNamespace(auth_url=info["auth_url"], config=DevCloudConfig(
            state_dir=tmp_path, users=default_users(1), floating_cidr=cidr))
        guest = boot_guest(remote, user="demo", name="orphan-vm")
        guest.run("setsid sh -c 'while :; do sleep 0.05; done' </dev/null >/dev/null 2>&1 &")
        assert _wait(lambda: lifetime.guest_processes(tmp_path / "guests"), 5)

        parent.kill()
        parent.wait()
        assert _wait(lambda: not is_alive(devcloud), 5), "the devcloud outlived its parent"
        assert lifetime.guest_processes(tmp_path / "guests") == {}
        assert not (tmp_path / "ready").exists()
    finally:
        parent.kill()
        if devcloud is not None and is_alive(devcloud):
            os.kill(devcloud, signal.SIGKILL)
        lifetime.kill_guest_processes(tmp_path / "guests")


def test_proc_argv_reads_a_process_command_line_argument_by_argument():
    from rally_metadata_plugin.devcloud.procfs import proc_argv

    assert proc_argv(os.getpid()) == sys.orig_argv
    process = subprocess.Popen(["true"])
    process.wait()
    assert proc_argv(process.pid) is None       # gone
