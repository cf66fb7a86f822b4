"""Nova contract with the real novaclient at several microversions."""

from __future__ import annotations

import io
import uuid

import paramiko
import pytest
from novaclient import exceptions as nova_exc
from rally_openstack.task.scenarios.nova import utils as rally_nova_utils

from devcloud_helpers import (clients, ensure_network, wait_for)
from devcloud_helpers import raw_request as _raw


def _register_rally_openstack_options() -> None:
    """rally_openstack reads CONF.openstack.*; rally registers it on load."""
    from rally.common import cfg
    from rally_openstack.common.cfg import opts
    for group, options in opts.list_opts():
        cfg.CONF.register_opts(options, group=group)


@pytest.fixture(scope="module")
def booted(devcloud):
    """One ACTIVE server of alice, on a routed network."""
    alice = clients(devcloud, "alice")
    nova = alice.nova("2.79")
    net_id = ensure_network(alice)
    image = next(iter(alice.glance().images.list()))
    server = nova.servers.create("nova-vm", image.id, "1",
                                 nics=[{"net-id": net_id}])
    assert nova.servers.get(server.id).status == "BUILD"
    wait_for(lambda: nova.servers.get(server.id).status == "ACTIVE",
             what="ACTIVE")
    return server.id


def test_flavors_small_flavor(devcloud):
    nova = clients(devcloud, "alice").nova("2.1")
    flavors = {f.name: f for f in nova.flavors.list()}
    assert "m1.tiny" in flavors
    tiny = nova.flavors.get(flavors["m1.tiny"].id)
    assert tiny.ram <= 512 and tiny.disk >= 1


@pytest.mark.parametrize("version", ["2.1", "2.25", "2.79", "2.91"])
def test_keypair_generated_and_parseable(devcloud, version):
    nova = clients(devcloud, "alice").nova(version)
    name = f"kp-{version}-{uuid.uuid4().hex[:6]}"
    keypair = nova.keypairs.create(name)
    key = paramiko.RSAKey.from_private_key(io.StringIO(keypair.private_key))
    assert keypair.public_key.split()[1] == key.get_base64()
    listed = [k.name for k in nova.keypairs.list()]
    assert name in listed
    nova.keypairs.delete(name)
    with pytest.raises(nova_exc.NotFound):
        nova.keypairs.get(name)


def test_keypair_rules_from_292(devcloud):
    alice = clients(devcloud, "alice")
    # novaclient refuses to even ask (G1) ...
    with pytest.raises(TypeError):
        alice.nova("2.92").keypairs.create("k292")
    # ... and the API answers 400 when asked anyway
    response = _raw(alice, "POST", "/os-keypairs", "2.92",
                    json={"keypair": {"name": "k292", "type": "ssh"}})
    assert response.status_code == 400
    public = paramiko.RSAKey.generate(1024)
    imported = alice.nova("2.92").keypairs.create(
        "k292", public_key=f"ssh-rsa {public.get_base64()} test")
    assert not getattr(imported, "private_key", None)
    alice.nova("2.92").keypairs.delete("k292")


def test_microversion_headers_and_406(devcloud):
    alice = clients(devcloud, "alice")
    response = _raw(alice, "GET", "/flavors", "2.79")
    assert response.status_code == 200
    assert response.headers["OpenStack-API-Version"] == "compute 2.79"
    assert response.headers["X-OpenStack-Nova-API-Version"] == "2.79"
    assert "OpenStack-API-Version" in response.headers["Vary"]
    legacy = _raw(alice, "GET", "/flavors",
                  headers={"X-OpenStack-Nova-API-Version": "2.11"})
    assert legacy.headers["X-OpenStack-Nova-API-Version"] == "2.11"
    assert _raw(alice, "GET", "/flavors", "2.97").status_code == 406


def test_boot_creates_port_and_fip_shows_in_addresses(devcloud, booted):
    alice = clients(devcloud, "alice")
    nova, neutron = alice.nova("2.79"), alice.neutron()
    ports = neutron.list_ports(device_id=booted)["ports"]
    assert len(ports) == 1
    assert ports[0]["device_owner"] == "compute:nova"
    assert ports[0]["tenant_id"] == alice.project_id
    public = neutron.list_networks(name="public")["networks"][0]
    fip = neutron.create_floatingip({"floatingip": {
        "floating_network_id": public["id"], "description": "nova-test"}}
    )["floatingip"]
    neutron.update_floatingip(fip["id"],
                              {"floatingip": {"port_id": ports[0]["id"]}})
    addresses = nova.servers.get(booted).addresses
    entries = [a for net in addresses.values() for a in net]
    assert {"fixed", "floating"} == {a["OS-EXT-IPS:type"] for a in entries}
    assert fip["floating_ip_address"] in [a["addr"] for a in entries]
    neutron.update_floatingip(fip["id"], {"floatingip": {"port_id": None}})
    entries = [a for net in nova.servers.get(booted).addresses.values()
               for a in net]
    assert [a["OS-EXT-IPS:type"] for a in entries] == ["fixed"]
    neutron.delete_floatingip(fip["id"])


def test_host_attribute_admin_only_and_admin_sees_other_projects(
        devcloud, booted):
    user_view = clients(devcloud, "alice").nova("2.79").servers.get(booted)
    assert not hasattr(user_view, "OS-EXT-SRV-ATTR:host")
    admin = clients(devcloud, "admin").nova("2.79")
    assert getattr(admin.servers.get(booted), "OS-EXT-SRV-ATTR:host")
    assert booted not in [s.id for s in admin.servers.list()]
    assert booted in [s.id for s in admin.servers.list(
        search_opts={"all_tenants": 1})]
    with pytest.raises(nova_exc.NotFound):
        clients(devcloud, "bob").nova("2.79").servers.get(booted)


@pytest.mark.parametrize("version,ids_are_uuids", [("2.1", False),
                                                   ("2.53", True),
                                                   ("2.88", True)])
def test_hypervisors(devcloud, version, ids_are_uuids):
    hypervisors = clients(devcloud, "admin").nova(version).hypervisors.list()
    assert len(hypervisors) >= 2
    for hypervisor in hypervisors:
        assert isinstance(hypervisor.id, str) == ids_are_uuids
    with pytest.raises(nova_exc.Forbidden):
        clients(devcloud, "alice").nova(version).hypervisors.list()


MIGRATE_CASES = [
    # (microversion, body, expected status)
    ("2.1", {"host": None, "block_migration": False,
             "disk_over_commit": False}, 202),
    ("2.1", {"host": None, "block_migration": False}, 400),
    ("2.1", {"block_migration": False, "disk_over_commit": False}, 400),
    ("2.1", {"host": None, "block_migration": "auto",
             "disk_over_commit": False}, 400),
    ("2.24", {"host": None, "block_migration": True,
              "disk_over_commit": False, "force": True}, 400),
    ("2.25", {"host": None, "block_migration": "auto"}, 202),
    ("2.25", {"host": None, "block_migration": "auto",
              "disk_over_commit": False}, 400),
    ("2.25", {"block_migration": "auto"}, 400),
    ("2.30", {"host": None, "block_migration": "auto", "force": False}, 202),
    ("2.67", {"host": None, "block_migration": "auto", "force": False}, 202),
    ("2.68", {"host": None, "block_migration": "auto", "force": False}, 400),
    ("2.79", {"host": None, "block_migration": "auto"}, 202),
    ("2.79", {"host": "compute-404", "block_migration": "auto"}, 400),
]


@pytest.mark.parametrize("version,body,status", MIGRATE_CASES)
def test_migrate_live_validation(devcloud, booted, version, body, status):
    admin = clients(devcloud, "admin")
    nova = admin.nova("2.79")
    wait_for(lambda: nova.servers.get(booted).status == "ACTIVE",
             timeout=20, what="ACTIVE before migrating")
    before = getattr(nova.servers.get(booted), "OS-EXT-SRV-ATTR:host")
    response = _raw(admin, "POST", f"/servers/{booted}/action", version,
                    json={"os-migrateLive": body})
    assert response.status_code == status, response.text
    if status == 202:
        # a second request while MIGRATING conflicts, as in nova
        again = _raw(admin, "POST", f"/servers/{booted}/action", version,
                     json={"os-migrateLive": body})
        assert again.status_code == 409
        wait_for(lambda: (lambda s: s.status == "ACTIVE" and getattr(
            s, "OS-EXT-SRV-ATTR:host") != before)(nova.servers.get(booted)),
            timeout=20, what="migration")


def test_novaclient_live_migrate_kwargs_per_version(devcloud, booted):
    """What rally's stock _live_migrate does works below 2.25 only (G3)."""
    admin = clients(devcloud, "admin")
    nova = admin.nova("2.24")
    wait_for(lambda: nova.servers.get(booted).status == "ACTIVE",
             timeout=20, what="ACTIVE")
    nova.servers.get(booted).live_migrate(block_migration=False,
                                          disk_over_commit=False)
    assert nova.servers.get(booted).status == "MIGRATING"
    wait_for(lambda: nova.servers.get(booted).status == "ACTIVE",
             timeout=20, what="ACTIVE")
    with pytest.raises(TypeError):
        admin.nova("2.25").servers.get(booted).live_migrate(
            block_migration="auto", disk_over_commit=False)
    user = clients(devcloud, "alice").nova("2.79")
    with pytest.raises(nova_exc.Forbidden):
        user.servers.live_migrate(booted, host=None, block_migration="auto")


def test_paging_marker_and_rally_list_servers(devcloud):
    bob = clients(devcloud, "bob")
    nova = bob.nova("2.79")
    net_id = ensure_network(bob)
    image = next(iter(bob.glance().images.list()))
    ids = [nova.servers.create(f"page-{i}", image.id, "1",
                               nics=[{"net-id": net_id}]).id
           for i in range(3)]
    first = nova.servers.list(limit=2)
    assert len(first) == 2
    rest = nova.servers.list(marker=first[-1].id, limit=2)
    assert {s.id for s in first + rest} == set(ids)
    with pytest.raises(nova_exc.BadRequest) as error:
        nova.servers.list(marker="not-a-server")
    assert "marker [not-a-server] not found" in str(error.value)
    _register_rally_openstack_options()
    listed = rally_nova_utils.list_servers(nova, detailed=True)
    assert {s.id for s in listed} == set(ids)
    for server_id in ids:
        nova.servers.delete(server_id)
        with pytest.raises(nova_exc.NotFound) as missing:
            nova.servers.get(server_id)
        assert missing.value.code == 404
    assert bob.neutron().list_ports(device_owner="compute:nova")["ports"] \
        == []


def test_server_groups_and_console(devcloud, booted):
    nova = clients(devcloud, "alice").nova("2.79")
    assert nova.server_groups.list() == []
    group = nova.server_groups.create(name="g", policy="anti-affinity")
    assert [g.id for g in nova.server_groups.list()] == [group.id]
    nova.server_groups.delete(group.id)
    assert "login" in nova.servers.get_console_output(booted)
