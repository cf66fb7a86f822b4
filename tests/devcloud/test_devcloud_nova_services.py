"""Nova's services: enabled/disabled and up/down compute hosts, which the
scheduler honours, per microversion with the real novaclient."""

from __future__ import annotations

import uuid

import pytest
from novaclient import exceptions as nova_exc

from devcloud_helpers import (boot_server, clients, host_of, raw_request,
                              wait_for)
from rally_metadata_plugin.adapters.live_migration import (LiveMigrator,
                                                           MigrationError)

SERVICE_KEYS = {"id", "binary", "host", "zone", "status", "state",
                "updated_at", "disabled_reason"}


@pytest.mark.parametrize("version", ["2.1", "2.11", "2.53", "2.96"])
def test_services_list_per_microversion(devcloud, version):
    nova = clients(devcloud, "admin").nova(version)
    services = nova.services.list()
    assert {s.binary for s in services} == {"nova-scheduler",
                                            "nova-conductor", "nova-compute"}
    computes = nova.services.list(binary="nova-compute")
    assert [s.host for s in computes] == ["compute-1", "compute-2"]
    assert all((s.status, s.state, s.zone) == ("enabled", "up", "nova")
               for s in computes)
    keys = SERVICE_KEYS | ({"forced_down"} if version != "2.1" else set())
    assert all(set(s.to_dict()) == keys for s in services)
    for service in services:
        if version in ("2.53", "2.96"):
            assert uuid.UUID(service.id)
        else:
            assert isinstance(service.id, int)
    (one,) = nova.services.list(host="compute-2", binary="nova-compute")
    assert one.host == "compute-2"
    with pytest.raises(nova_exc.Forbidden):
        clients(devcloud, "alice").nova(version).services.list()


def test_disabled_and_down_hosts_are_not_scheduled(devcloud_factory):
    cloud = devcloud_factory(hypervisors=3, disabled_hosts=("compute-2",),
                             down_hosts=("compute-3",))
    admin = clients(cloud, "admin")
    nova = admin.nova("2.53")
    states = {s.host: (s.status, s.state)
              for s in nova.services.list(binary="nova-compute")}
    assert states == {"compute-1": ("enabled", "up"),
                      "compute-2": ("disabled", "up"),
                      "compute-3": ("enabled", "down")}
    hypervisors = {h.hypervisor_hostname: (h.status, h.state)
                   for h in nova.hypervisors.list()}
    assert hypervisors == states
    servers = [boot_server(cloud, name=f"only-{i}") for i in range(2)]
    assert {host_of(nova, s) for s in servers} == {"compute-1"}
    # what the scenario checks before migrating
    migrator = LiveMigrator(admin.nova("2.1"))
    with pytest.raises(MigrationError, match="1 of 3 nova-compute"):
        migrator.require_hypervisors(2)
    # the scheduler finds no host: synchronous below 2.34 ...
    with pytest.raises(nova_exc.BadRequest, match="No valid host was found. "
                       "There are not enough hosts available."):
        admin.nova("2.1").servers.live_migrate(
            servers[0], host=None, block_migration=False,
            disk_over_commit=False)
    # ... a forced host must be up (a disabled one is fine, as in nova)
    with pytest.raises(nova_exc.BadRequest, match="Compute service of "
                       "compute-3 is unavailable at this time."):
        admin.nova("2.24").servers.live_migrate(
            servers[0], host="compute-3", block_migration=False,
            disk_over_commit=False)
    # ... and from 2.34 the record tells
    nova.servers.live_migrate(servers[0], host=None, block_migration="auto")
    late = admin.nova("2.96")
    late.servers.live_migrate(servers[1], host="compute-2",
                              block_migration="auto")
    for server_id in servers:
        record = wait_for(lambda: (lambda r: r if r.status == "error"
                                   else None)(
            late.migrations.list(instance_uuid=server_id)[0]), what="error")
        assert late.servers.get(server_id).status == "ACTIVE"
        assert host_of(late, server_id) == "compute-1"
        assert record.dest_compute is None
    # enabling compute-2 (2.53+) lets the scheduler use it
    compute2 = nova.services.list(host="compute-2", binary="nova-compute")[0]
    enabled = nova.services.enable(compute2.id)
    assert (enabled.status, enabled.id) == ("enabled", compute2.id)
    late.servers.live_migrate(servers[0], host=None, block_migration="auto")
    wait_for(lambda: host_of(late, servers[0]) == "compute-2"
             and late.servers.get(servers[0]).status == "ACTIVE",
             what="migrated to compute-2")
    assert LiveMigrator(admin.nova("2.1")).require_hypervisors(2) == 2


def test_service_actions_below_253(devcloud_factory, tempest_lags_nova):
    cloud = devcloud_factory()
    admin = clients(cloud, "admin")
    old = admin.nova("2.11")
    disabled = old.services.disable_log_reason("compute-2", "nova-compute",
                                               "maintenance")
    assert (disabled.status, disabled.disabled_reason) == ("disabled",
                                                           "maintenance")
    (listed,) = old.services.list(host="compute-2")
    assert (listed.status, listed.disabled_reason) == ("disabled",
                                                       "maintenance")
    forced = old.services.force_down("compute-2", "nova-compute", True)
    assert forced.forced_down is True
    (listed,) = old.services.list(host="compute-2")
    assert (listed.state, listed.forced_down) == ("down", True)
    assert old.services.enable("compute-2", "nova-compute").status == \
        "enabled"
    (listed,) = old.services.list(host="compute-2")
    assert (listed.status, listed.disabled_reason) == ("enabled", None)
    with pytest.raises(nova_exc.NotFound):
        old.services.disable("compute-9", "nova-compute")
    unknown = raw_request(admin, "PUT", "/os-services/reboot", "2.11",
                          json={"host": "compute-2", "binary": "nova-compute"})
    assert unknown.status_code == 404


def test_service_updates_from_253(devcloud_factory):
    cloud = devcloud_factory()
    admin = clients(cloud, "admin")
    new = admin.nova("2.53")
    (service,) = new.services.list(host="compute-2")
    disabled = new.services.disable_log_reason(service.id, "maintenance")
    assert (disabled.status, disabled.disabled_reason, disabled.id) == (
        "disabled", "maintenance", service.id)
    down = new.services.force_down(service.id, True)
    assert (down.state, down.forced_down) == ("down", True)
    up = new.services.force_down(service.id, False)
    enabled = new.services.enable(service.id)
    assert (up.state, up.forced_down) == ("up", False)
    assert (enabled.status, enabled.disabled_reason) == ("enabled", None)
    bad = raw_request(admin, "PUT", "/os-services/disable", "2.53",
                      json={"status": "disabled"})
    assert bad.status_code == 400 and "Invalid uuid" in bad.text
    scheduler = new.services.list(binary="nova-scheduler")[0]
    with pytest.raises(nova_exc.BadRequest, match="Only nova-compute"):
        new.services.disable(scheduler.id)
    with pytest.raises(nova_exc.NotFound):
        new.services.disable(str(uuid.uuid4()))
    nothing = raw_request(admin, "PUT", f"/os-services/{service.id}", "2.53",
                          json={})
    assert nothing.status_code == 400
    with pytest.raises(nova_exc.Forbidden):
        clients(cloud, "alice").nova("2.53").services.disable(service.id)


def test_unknown_host_names_are_refused():
    from rally_metadata_plugin.devcloud.config import DevCloudConfig
    with pytest.raises(ValueError, match="compute-9"):
        DevCloudConfig(state_dir="/tmp/x", disabled_hosts=("compute-9",))
