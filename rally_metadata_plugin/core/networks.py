"""Which networks and addresses the scenario uses, decided from what the cloud lists.

Pure: the callers pass neutron's network dicts; nothing here does I/O or
imports Rally.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence


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
