"""Neutron contract with the real neutronclient."""

from __future__ import annotations

import pytest
from neutronclient.common import exceptions as neutron_exc

from devcloud_helpers import clients, ensure_network


def test_extensions_rally_checks(devcloud):
    aliases = {e["alias"] for e in
               clients(devcloud, "alice").neutron().list_extensions()[
                   "extensions"]}
    assert {"security-group", "ext-gw-mode", "router",
            "external-net"} <= aliases
    assert "lbaas" not in aliases and "lbaasv2" not in aliases


def test_public_network_visible_to_every_tenant(devcloud):
    for name in ("alice", "bob", "admin"):
        external = clients(devcloud, name).neutron().list_networks(
            **{"router:external": True})["networks"]
        assert [n["name"] for n in external] == ["public"]
        assert external[0]["tenant_id"] == external[0]["project_id"]


def test_port_not_found_is_typed(devcloud):
    neutron = clients(devcloud, "alice").neutron()
    with pytest.raises(neutron_exc.PortNotFoundClient):
        neutron.delete_port("no-such-port")
    with pytest.raises(neutron_exc.NotFound):
        neutron.show_network("no-such-network")


def test_unknown_collection_is_404(devcloud):
    neutron = clients(devcloud, "alice").neutron()
    with pytest.raises(neutron_exc.NotFound) as error:
        neutron.list_trunks()
    assert error.value.status_code == 404


def test_tenant_scoping_and_tenant_id_everywhere(devcloud):
    alice, bob = clients(devcloud, "alice"), clients(devcloud, "bob")
    net_id = ensure_network(alice)
    an, bn = alice.neutron(), bob.neutron()
    assert net_id not in [n["id"] for n in bn.list_networks()["networks"]]
    with pytest.raises(neutron_exc.NotFound):
        bn.show_network(net_id)
    admin_ids = [n["id"] for n in
                 clients(devcloud, "admin").neutron().list_networks()[
                     "networks"]]
    assert net_id in admin_ids
    for plural in ("networks", "subnets", "ports", "routers",
                   "security_groups", "floatingips"):
        items = getattr(an, f"list_{plural}")(
            tenant_id=alice.project_id)[plural]
        for item in items:
            assert item["tenant_id"] == item["project_id"] == \
                alice.project_id, (plural, item)
    groups = an.list_security_groups()["security_groups"]
    assert [g["name"] for g in groups].count("default") == 1


def test_router_interface_port_and_in_use_rules(devcloud):
    alice = clients(devcloud, "alice")
    neutron = alice.neutron()
    net = neutron.create_network({"network": {"name": "ri"}})["network"]
    subnet = neutron.create_subnet({"subnet": {
        "network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4,
        "name": "ri", "dns_nameservers": ["8.8.8.8", "8.8.4.4"]}})["subnet"]
    public = neutron.list_networks(name="public")["networks"][0]
    router = neutron.create_router({"router": {
        "name": "ri", "external_gateway_info": {
            "network_id": public["id"]}}})["router"]
    assert router["external_gateway_info"]["network_id"] == public["id"]
    neutron.add_interface_router(router["id"], {"subnet_id": subnet["id"]})
    ports = neutron.list_ports(device_id=router["id"])["ports"]
    assert len(ports) == 1 and ports[0]["name"] == ""
    assert ports[0]["device_owner"] == "network:router_interface"
    with pytest.raises(neutron_exc.Conflict):
        neutron.delete_router(router["id"])
    with pytest.raises(neutron_exc.Conflict):
        neutron.delete_port(ports[0]["id"])
    neutron.remove_interface_router(router["id"],
                                    {"port_id": ports[0]["id"]})
    neutron.delete_router(router["id"])
    neutron.delete_subnet(subnet["id"])
    neutron.delete_network(net["id"])
    with pytest.raises(neutron_exc.NetworkNotFoundClient):
        neutron.show_network(net["id"])


def test_floating_ip_needs_a_route_to_public(devcloud):
    bob = clients(devcloud, "bob")
    neutron = bob.neutron()
    net = neutron.create_network({"network": {"name": "isolated"}})["network"]
    neutron.create_subnet({"subnet": {"network_id": net["id"],
                                      "cidr": "10.8.0.0/24",
                                      "ip_version": 4}})
    port = neutron.create_port({"port": {"network_id": net["id"]}})["port"]
    public = neutron.list_networks(name="public")["networks"][0]
    fip = neutron.create_floatingip({"floatingip": {
        "floating_network_id": public["id"]}})["floatingip"]
    assert fip["floating_ip_address"].startswith("127.")
    with pytest.raises(neutron_exc.NotFound):
        neutron.update_floatingip(fip["id"],
                                  {"floatingip": {"port_id": port["id"]}})
    neutron.delete_floatingip(fip["id"])
    neutron.delete_port(port["id"])


def test_security_group_rules_like_allow_ssh(devcloud):
    neutron = clients(devcloud, "bob").neutron()
    group = neutron.create_security_group({"security_group": {
        "name": "ssh", "description": "d"}})["security_group"]
    assert {r["direction"] for r in group["security_group_rules"]} == {
        "egress"}
    rule = {"security_group_id": group["id"], "direction": "ingress",
            "protocol": "tcp", "ethertype": "IPv4", "port_range_min": 1,
            "port_range_max": 65535, "remote_ip_prefix": "0.0.0.0/0"}
    neutron.create_security_group_rule({"security_group_rule": rule})
    with pytest.raises(neutron_exc.Conflict):
        neutron.create_security_group_rule({"security_group_rule": rule})
    neutron.delete_security_group(group["id"])
