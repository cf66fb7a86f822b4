"""networks: the floating network and the guest's fixed address, from what the cloud lists."""

import pytest

from rally_metadata_plugin.core import networks


def fixed(addr, version):
    return {"addr": addr, "version": version, "OS-EXT-IPS:type": "fixed",
            "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"}


def floating(addr):
    return {"addr": addr, "version": 4, "OS-EXT-IPS:type": "floating"}


#: A dual-stack server on two networks, IPv6 listed first on both, as nova may.
DUAL_STACK = {
    "private": [fixed("fd00:1::5", 6), fixed("10.0.0.5", 4), floating("172.24.4.10")],
    "second": [fixed("2001:db8:2::7", 6), fixed("192.168.2.7", 4)],
}


def pick(addresses=DUAL_STACK, network=None, use_floating_ip=True, ip_version=4):
    return networks.pick_fixed_address(addresses, network=network,
                                       use_floating_ip=use_floating_ip, ip_version=ip_version)


@pytest.mark.parametrize("network,use_floating_ip,ip_version,expected", [
    # A floating IP is IPv4 and needs an IPv4 fixed address, even with ip_version 6.
    ("private", True, 4, ("private", "10.0.0.5", 4)),
    ("private", True, 6, ("private", "10.0.0.5", 4)),
    ("second", True, 4, ("second", "192.168.2.7", 4)),
    # Without one, the family is ip_version's.
    ("second", False, 6, ("second", "2001:db8:2::7", 6)),
    ("second", False, 4, ("second", "192.168.2.7", 4)),
    ("private", False, 6, ("private", "fd00:1::5", 6)),
    # No network named: the first network with such an address.
    (None, False, 4, ("private", "10.0.0.5", 4)),
    (None, True, 6, ("private", "10.0.0.5", 4)),
])
def test_the_fixed_address_follows_the_network_and_the_family(network, use_floating_ip,
                                                               ip_version, expected):
    found = pick(network=network, use_floating_ip=use_floating_ip, ip_version=ip_version)
    assert (found.network, found.address, found.version) == expected


def test_a_floating_address_is_never_taken_for_the_fixed_one():
    addresses = {"private": [floating("172.24.4.10"), fixed("10.0.0.5", 4)]}
    assert pick(addresses, network="private").address == "10.0.0.5"


def test_version_is_read_from_the_address_when_nova_does_not_say():
    addresses = {"private": [{"addr": "fd00::5"}, {"addr": "10.0.0.5"}]}
    assert pick(addresses, network="private").address == "10.0.0.5"


def test_floating_ip_on_an_ipv6_only_network_is_a_clear_error():
    addresses = {"v6only": [fixed("2001:db8::5", 6)], "private": [fixed("10.0.0.5", 4)]}
    with pytest.raises(networks.NoMatchingAddress) as error:
        pick(addresses, network="v6only", use_floating_ip=True, ip_version=6)
    message = str(error.value)
    assert "no IPv4 fixed address on network 'v6only'" in message
    assert "use_floating_ip is true" in message and "2001:db8::5 (v6only)" in message
    assert "set use_floating_ip to false" in message


def test_no_address_of_ip_versions_family_is_a_clear_error():
    with pytest.raises(networks.NoMatchingAddress) as error:
        pick({"v4only": [fixed("10.0.0.5", 4)]}, network="v4only", use_floating_ip=False,
             ip_version=6)
    message = str(error.value)
    assert "no IPv6 fixed address on network 'v4only'" in message
    assert "use_floating_ip is false" in message and "ip_version" in message


def test_a_network_the_server_is_not_on_is_a_clear_error():
    with pytest.raises(networks.NoMatchingAddress) as error:
        pick(network="third")
    assert "no address on network 'third'" in str(error.value)
    assert "private, second" in str(error.value)


def test_port_for_address():
    ports = [{"id": "p1", "fixed_ips": [{"ip_address": "fd00:1::5"}, {"ip_address": "10.0.0.5"}]},
             {"id": "p2", "fixed_ips": [{"ip_address": "192.168.2.7"}]}]
    assert networks.port_for_address(ports, "192.168.2.7")["id"] == "p2"
    assert networks.port_for_address(ports, "10.0.0.5")["id"] == "p1"
    with pytest.raises(networks.NoMatchingAddress) as error:
        networks.port_for_address(ports, "10.9.9.9")
    assert "10.0.0.5" in str(error.value)


@pytest.mark.parametrize("networks_seen,argument,problem", [
    ([{"id": "e1", "name": "public", "router:external": True}], None, None),
    ([{"id": "e1", "name": "public", "router:external": True}], "e1", None),
    ([{"id": "p1", "name": "provider", "router:external": False}], None,
     "use_floating_ip is true but there is no external network"),
])
def test_floating_network_problem(networks_seen, argument, problem):
    found = networks.floating_network_problem(networks_seen, argument)
    assert found == problem if problem is None else problem in found
