"""Which networks and addresses the scenario uses, decided from what the cloud lists.

Pure: the callers pass neutron's network dicts; nothing here does I/O or
imports Rally.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Mapping, Optional, Sequence

#: ``OS-EXT-IPS:type`` of an address nova lists for a server.
ADDRESS_TYPE = "OS-EXT-IPS:type"


class NoMatchingAddress(ValueError):
    """The server has no address the scenario can use; the message says which and why."""


def _describe(networks: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{net.get('name') or '(no name)'} (id {net.get('id')})"
                     for net in networks) or "none"


def floating_network_problem(
    networks: Sequence[Mapping[str, Any]], floating_network: Optional[str]
) -> Optional[str]:
    """Why the scenario could not create a floating IP, or ``None``.

    ``networks`` are the networks a user sees (neutron ``list_networks``);
    ``floating_network`` is the argument: a network name or id, or ``None``
    for the first external network.  The lookup is rally-openstack's
    (``NeutronService.create_floatingip``): the first network whose name or
    id matches, which must be external.
    """
    external = [net for net in networks if net.get("router:external")]
    if floating_network is None:
        if external:
            return None
        return ("use_floating_ip is true but there is no external network to take a floating "
                "IP from: give floating_network, or set use_floating_ip to false to reach the "
                "guest on its fixed address")
    match = next((net for net in networks if floating_network in (net.get("name"),
                                                                  net.get("id"))), None)
    if match is None:
        return (f"floating_network {floating_network!r} is neither the name nor the id of a "
                f"network; external networks: {_describe(external)}. Set floating_network to "
                f"one of them, omit it to use the first, or set use_floating_ip to false")
    if not match.get("router:external"):
        return (f"floating_network {floating_network!r} is network {_describe([match])}, "
                f"which is not external (router:external is false); external networks: "
                f"{_describe(external)}")
    return None


# -- the guest's address ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FixedAddress:
    network: str
    address: str
    version: int


def address_version(use_floating_ip: bool, ip_version: int) -> int:
    """The IP version of the fixed address the scenario uses to reach the guest.

    With a floating IP: 4, whatever ``ip_version`` says, because neutron's
    floating IPs are IPv4 and are NATed to an IPv4 fixed address (the guest
    can still probe metadata over IPv6).  Without one, Rally connects to the
    fixed address itself, in the family ``ip_version`` names: the family the
    task says the guest's network is measured over (``ip_version: 6`` on an
    IPv6-only or dual-stack network means SSH over IPv6 too).
    """
    return 4 if use_floating_ip else ip_version


def _version(entry: Mapping[str, Any]) -> Optional[int]:
    version = entry.get("version")
    if version in (4, 6):
        return int(version)
    try:
        return ipaddress.ip_address(str(entry.get("addr"))).version
    except ValueError:
        return None


def _fixed(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    # Without the OS-EXT-IPS extension nova does not say; take the address as fixed.
    return [e for e in entries or () if e.get(ADDRESS_TYPE, "fixed") == "fixed"]


def pick_fixed_address(
    addresses: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    network: Optional[str],
    use_floating_ip: bool,
    ip_version: int,
) -> FixedAddress:
    """The fixed address the scenario reaches the guest on, or associates the floating IP with.

    :param addresses: nova's ``server.addresses``: ``{network name: [{"addr": ...,
        "version": 4 or 6, "OS-EXT-IPS:type": "fixed" or "floating"}, ...]}``
    :param network: name of the network the server was booted on for the
        guest (the first ``nics`` entry, else the network context's);
        ``None``: the first network that has a suitable address
    :param use_floating_ip: the scenario argument; decides the IP version
        with ``ip_version`` (see :func:`address_version`)
    :raises NoMatchingAddress: naming the arguments that decide
    """
    version = address_version(use_floating_ip, ip_version)
    if network is not None and network not in addresses:
        raise NoMatchingAddress(
            f"The server has no address on network {network!r}, the network it was booted "
            f"on for the guest (the first entry of nics, else the network context's); nova "
            f"lists addresses on: {', '.join(addresses) or 'no network'}.")
    candidates = [network] if network is not None else list(addresses)
    for name in candidates:
        for entry in _fixed(addresses[name]):
            if _version(entry) == version:
                return FixedAddress(name, str(entry["addr"]), version)
    where = f"network {network!r}" if network is not None else "any network"
    found = ", ".join(f"{e.get('addr')} ({name})" for name in candidates
                      for e in _fixed(addresses[name])) or "none"
    if use_floating_ip:
        why = ("to associate the floating IP with (use_floating_ip is true, and neutron's "
               "floating IPs are IPv4)")
        fix = ("Boot the server on a network with an IPv4 subnet (nics), or set "
               "use_floating_ip to false to reach it on its fixed address of the ip_version "
               "family")
    else:
        why = (f"to reach the guest on (use_floating_ip is false, so the address family is "
               f"ip_version's: {ip_version})")
        fix = (f"Set ip_version to a family the network has, boot the server on a network "
               f"with an IPv{version} subnet (nics), or use a floating IP")
    raise NoMatchingAddress(
        f"The server has no IPv{version} fixed address on {where} {why}; its fixed addresses: "
        f"{found}. {fix}.")


def port_for_address(ports: Sequence[Mapping[str, Any]], address: str) -> Mapping[str, Any]:
    """The port (neutron ``list_ports`` dicts) holding the fixed IP ``address``."""
    for port in ports:
        if any(ip.get("ip_address") == address for ip in port.get("fixed_ips") or ()):
            return port
    held = ", ".join(ip.get("ip_address", "?") for port in ports
                     for ip in port.get("fixed_ips") or ()) or "none"
    raise NoMatchingAddress(
        f"No port of the server holds the fixed address {address} to associate the floating "
        f"IP with; its ports hold: {held}.")
