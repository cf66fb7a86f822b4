"""What a switchover does to the guest beyond the pause: a reboot that kills
the meter (``guest_reboot``), SSH connections whose packets are dropped
(``ssh_blackhole_seconds``); and the profile fields that ask for them."""

from __future__ import annotations

import math
import random
import socket
import time

import paramiko
import pytest

from devcloud_helpers import (boot_guest, clients, live_migrate,
                              quick_profile, start_loop, wait_for)
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import profiles
from rally_metadata_plugin.devcloud.procfs import proc_state


def _echo_channel(client: paramiko.SSHClient) -> paramiko.Channel:
    """A channel running ``cat`` in the guest: what is sent comes back."""
    channel = client.get_transport().open_session()
    channel.exec_command("cat")
    channel.sendall(b"before\n")
    channel.settimeout(5)
    assert channel.recv(100) == b"before\n"
    return channel


def _silent(channel: paramiko.Channel, seconds: float) -> bool:
    """Nothing, not even an EOF, arrives on the channel for ``seconds``."""
    channel.settimeout(seconds)
    try:
        channel.recv(100)
    except socket.timeout:
        return True
    return False


def test_guest_reboot_kills_every_guest_process_and_closes_its_ssh(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(
        FaultKind.REFUSED, outage=(0.2, 0.2), outcome_fields={"guest_reboot": True}))
    guest = boot_guest(cloud, name="reboot-vm")
    pid = start_loop(guest)
    client = guest.ssh()
    channel = _echo_channel(client)

    record = live_migrate(cloud, guest)

    assert record["pause_start"] <= record["guest_reboot_at"] <= record["pause_end"]
    assert record["guest_processes_killed"] >= 2      # the loop and its sleep, cat
    assert record["ssh_blackhole_start"] is None
    wait_for(lambda: proc_state(pid) in (None, "Z"), timeout=3, what="loop killed")
    assert cloud.guests.guest(guest.server_id).processes() == []
    # the connection of before the reboot is closed, a new one works at once
    wait_for(lambda: not client.get_transport().is_active(), timeout=3,
             what="old connection closed")
    channel.settimeout(3)
    assert channel.recv(100) == b""
    client.close()
    status, out, _ = guest.run("hostname; cat loop.pid")
    assert (status, out.split()) == (0, ["reboot-vm", str(pid)])  # the disk stays
    home = cloud.guests.guest(guest.server_id).home
    ticks = (home / "ticks").read_text()
    time.sleep(0.3)
    assert (home / "ticks").read_text() == ticks


def test_ssh_blackhole_holds_existing_connections_then_lets_them_go_on(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(
        FaultKind.REFUSED, outage=(0.2, 0.2), outcome_fields={"ssh_blackhole_seconds": 2.5}))
    guest = boot_guest(cloud, name="blackhole-vm")
    pid = start_loop(guest)
    client = guest.ssh()
    channel = _echo_channel(client)

    record = live_migrate(cloud, guest)

    assert record["ssh_blackhole_end"] - record["ssh_blackhole_start"] == pytest.approx(2.5)
    assert record["ssh_blackhole_connections"] == 1
    assert record["pause_start"] <= record["ssh_blackhole_start"] <= record["pause_end"]
    assert record["guest_reboot_at"] is None
    channel.sendall(b"during\n")         # the client's kernel takes it ...
    assert _silent(channel, 0.5)          # ... and nothing comes back
    # new connections are served meanwhile; the guest is untouched
    started = time.monotonic()
    assert guest.run("echo new")[:2] == (0, "new\n")
    assert time.monotonic() - started < 1.5
    assert proc_state(pid) in ("S", "R")
    # no FIN, no RST: once the packets flow again, the old connection goes on
    assert client.get_transport().is_active()
    channel.settimeout(5)
    assert channel.recv(100) == b"during\n"
    assert time.clock_gettime(time.CLOCK_BOOTTIME) >= record["ssh_blackhole_end"]
    channel.close()
    client.close()


def test_ssh_blackhole_for_good_until_the_server_goes(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(
        FaultKind.REFUSED, outage=(0.2, 0.2), outcome_fields={"ssh_blackhole_seconds": None}))
    guest = boot_guest(cloud, name="forever-vm")
    client = guest.ssh()
    channel = _echo_channel(client)

    record = live_migrate(cloud, guest)

    assert record["ssh_blackhole_start"] is not None
    assert record["ssh_blackhole_end"] is None
    channel.sendall(b"during\n")
    assert _silent(channel, 3.0)
    assert client.get_transport().is_active()
    with pytest.raises(paramiko.SSHException):
        client.get_transport().open_session(timeout=1)
    assert guest.run("echo new")[:2] == (0, "new\n")
    # a second migration drops only what exists then: the new connection
    # made now goes silent too, earlier silent ones stay silent
    second = guest.ssh()
    later = _echo_channel(second)
    live_migrate(cloud, guest)
    later.sendall(b"x\n")
    assert _silent(later, 1.0)
    clients(cloud, "alice").nova("2.79").servers.delete(guest.server_id)
    wait_for(lambda: not client.get_transport().is_active(), timeout=10,
             what="closed with the server")
    client.close()
    second.close()


# -- the profile fields -------------------------------------------------------

def test_outcome_fields_parse_and_draw():
    profile = profiles.Profile.from_dict({"outcomes": [
        {"kinds": {"refused": 1}, "outage_seconds": 1, "guest_reboot": True,
         "ssh_blackhole_seconds": [2, 4]}]})
    plan = profile.draw(random.Random(3))
    assert plan.guest_reboot and 2 <= plan.ssh_blackhole <= 4
    forever = profiles.Profile.from_dict({"outcomes": [
        {"ssh_blackhole_seconds": None}]}).draw(random.Random(3))
    assert forever.ssh_blackhole == math.inf and forever.outage is None
    plain = profiles.Profile.from_dict({"outcomes": [{}]}).draw(random.Random(3))
    assert not plain.guest_reboot and plain.ssh_blackhole is None


def test_new_fields_leave_the_draws_of_a_seed_as_they_were():
    """Drawn last: a profile without them draws what it always drew."""
    base = {"precopy_seconds": [0.1, 1], "pause_seconds": [0, 0.5],
            "outcomes": [{"kinds": {"refused": 1, "hang": 1},
                          "outage_seconds": [1, 2],
                          "outage_delay_seconds": [0, 1]}]}
    more = {**base, "outcomes": [{**base["outcomes"][0], "guest_reboot": True,
                                  "ssh_blackhole_seconds": [1, 9]}]}
    for seed in range(20):
        old = profiles.Profile.from_dict(base).draw(random.Random(seed))
        new = profiles.Profile.from_dict(more).draw(random.Random(seed))
        assert (new.precopy, new.pause, new.outage) == (old.precopy, old.pause, old.outage)


@pytest.mark.parametrize("outcome,message", [
    ({"guest_reboot": "yes"}, "guest_reboot: true or false"),
    ({"ssh_blackhole_seconds": [3, 1]}, "ssh_blackhole_seconds"),
    ({"ssh_blackhole_seconds": "long"}, "ssh_blackhole_seconds"),
    ({"error": {"message": "x"}, "guest_reboot": True}, "no switchover"),
    ({"error": {"message": "x"}, "ssh_blackhole_seconds": 1}, "no switchover"),
])
def test_bad_outcome_fields_are_rejected(outcome, message):
    with pytest.raises(profiles.ProfileError, match=message):
        profiles.Profile.from_dict({"outcomes": [outcome]})


def test_shipped_guest_reboot_and_ssh_drop_profiles():
    reboot = profiles.Profile.load("guest-reboot")
    drop = profiles.Profile.load("ssh-drop")
    for seed in range(50):
        plan = reboot.draw(random.Random(seed))
        assert plan.guest_reboot and plan.ssh_blackhole is None and not plan.error
        plan = drop.draw(random.Random(seed))
        assert plan.ssh_blackhole == math.inf and not plan.guest_reboot
        assert not plan.error and plan.outage.duration <= 1.5
