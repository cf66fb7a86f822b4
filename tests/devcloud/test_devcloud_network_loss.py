"""Network loss at the switchover (``network_loss_seconds``): the guest's
floating IP refuses new connections for the drawn time, existing ones go on,
and the ground truth says when."""

from __future__ import annotations

import random
import socket
import time

import pytest

from devcloud_helpers import boot_guest, live_migrate, quick_profile, wait_for
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import profiles


def _answers(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
    except OSError:
        return False
    return True


def test_the_floating_ip_refuses_connections_for_the_drawn_time(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(
        FaultKind.REFUSED, outage=(0.2, 0.2), outcome_fields={"network_loss_seconds": 1.5}))
    guest = boot_guest(cloud, name="netloss-vm")
    port = cloud.config.ssh_port
    client = guest.ssh()
    assert _answers(guest.address, port)

    record = live_migrate(cloud, guest)

    assert record["network_loss_end"] - record["network_loss_start"] == pytest.approx(1.5)
    assert record["pause_start"] <= record["network_loss_start"] <= record["pause_end"]
    assert record["network_loss_addresses"] == 1
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert now < record["network_loss_end"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((guest.address, port), timeout=1)
    # the connection of before goes on: the loss is of new connections only
    assert client.exec_command("echo still")[1].read() == b"still\n"
    wait_for(lambda: _answers(guest.address, port), timeout=5, what="listening again")
    back = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert back - record["network_loss_end"] < 0.5
    assert guest.run("echo new")[:2] == (0, "new\n")
    client.close()


def test_without_network_loss_the_truth_says_none(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(FaultKind.REFUSED, outage=(0.2, 0.2)))
    guest = boot_guest(cloud, name="plain-vm")
    record = live_migrate(cloud, guest)
    assert record["network_loss_start"] is None and record["network_loss_end"] is None
    assert _answers(guest.address, cloud.config.ssh_port)


def test_a_server_deleted_during_the_loss_does_not_listen_again(devcloud_factory):
    from devcloud_helpers import clients
    cloud = devcloud_factory(profile=quick_profile(
        FaultKind.REFUSED, outage=(0.2, 0.2), outcome_fields={"network_loss_seconds": 1.0}))
    guest = boot_guest(cloud, name="gone-vm")
    live_migrate(cloud, guest)
    clients(cloud, "alice").nova("2.79").servers.delete(guest.server_id)
    wait_for(lambda: guest.server_id not in cloud.backend.servers, timeout=10,
             what="server deleted")
    time.sleep(1.3)
    assert not _answers(guest.address, cloud.config.ssh_port)


def test_network_loss_field_parses_draws_last_and_is_validated():
    profile = profiles.Profile.from_dict({"outcomes": [
        {"kinds": {"refused": 1}, "outage_seconds": 1, "network_loss_seconds": [1, 3]}]})
    plan = profile.draw(random.Random(3))
    assert 1 <= plan.network_loss <= 3
    assert profiles.Profile.from_dict({"outcomes": [{}]}).draw(
        random.Random(3)).network_loss is None
    base = {"outcomes": [{"kinds": {"refused": 1}, "outage_seconds": [1, 2],
                          "ssh_blackhole_seconds": [1, 2]}]}
    more = {"outcomes": [{**base["outcomes"][0], "network_loss_seconds": [1, 9]}]}
    for seed in range(20):
        old = profiles.Profile.from_dict(base).draw(random.Random(seed))
        new = profiles.Profile.from_dict(more).draw(random.Random(seed))
        assert (new.precopy, new.pause, new.outage, new.ssh_blackhole) == \
            (old.precopy, old.pause, old.outage, old.ssh_blackhole)
    for outcome, message in [({"network_loss_seconds": [3, 1]}, "network_loss_seconds"),
                             ({"error": {"message": "x"}, "network_loss_seconds": 1},
                              "no switchover")]:
        with pytest.raises(profiles.ProfileError, match=message):
            profiles.Profile.from_dict({"outcomes": [outcome]})


def test_shipped_network_loss_profile():
    profile = profiles.Profile.load("network-loss")
    plans = [profile.draw(random.Random(i)) for i in range(200)]
    assert all(1.0 <= p.network_loss <= 3.0 for p in plans)
    assert all(0.2 <= p.outage.duration <= 1.5 for p in plans)
