"""The ports of servers: what compute asks of the network.

Nova's neutron API in small: a boot request's networks are checked before
anything is created, each booted server gets (or takes) a port per
requested network, owned by ``compute:nova`` and bound to the server's
host; the ports move with a live migration and go with the server. Nova's
``addresses`` of a server are read from its ports and their floating IPs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model.identity import Caller

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend
    from rally_metadata_plugin.devcloud.model.compute import Server
    from rally_metadata_plugin.devcloud.model.network import Port

COMPUTE_OWNER = "compute:nova"


@dataclasses.dataclass(frozen=True)
class NetworkRequest:
    """One entry of a boot request's networks: an existing port, or a new
    port on a network (optionally with a fixed address)."""

    network_id: str | None = None
    port_id: str | None = None
    fixed_ip: str | None = None


@dataclasses.dataclass(frozen=True)
class ServerAddress:
    """One address of a server as nova lists it (``fixed``/``floating``)."""

    address: str
    kind: str
    mac_address: str


class ServerPorts:
    """Plugs servers into networks; state is the network's ports."""

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud

    def check_requests(self, caller: Caller,
                       networks: list[NetworkRequest] | str | None
                       ) -> list[NetworkRequest]:
        """Check a boot request's networks (compute calls this before it
        creates anything); ``auto``/None mean the project's own networks,
        else the shared ones, ``none`` none."""
        network = self._cloud.network
        if networks == "none":
            return []
        if networks is None or networks == "auto":
            candidates = network.internal_networks()
            own = [n for n in candidates if n.project_id == caller.project_id]
            shared = [n for n in candidates if n.shared]
            return [NetworkRequest(network_id=n.id) for n in (own or shared)]
        for request in networks:
            if request.port_id:
                port = network.find_port(request.port_id)
                if port is None or port.device_id or not caller.owns(
                        port.project_id):
                    raise exc.NovaBadRequest(
                        f"Port {request.port_id} not found or in use.")
            elif not network.network_visible(
                    caller, network.find_network(request.network_id)):
                raise exc.NovaBadRequest(
                    f"Network {request.network_id} could not be found.")
        return list(networks)

    def plug(self, server: Server, request: NetworkRequest,
             security_group_ids: list[str]) -> None:
        """Compute boots ``server``: bind the requested port, or create a
        ``compute:nova`` port on the requested network."""
        network = self._cloud.network
        with self._cloud.lock:
            if request.port_id:
                port = network.find_port(request.port_id)
            else:
                port = network.new_port(
                    network.find_network(request.network_id),
                    server.project_id,
                    name="", fixed_ip=request.fixed_ip,
                    security_groups=security_group_ids)
            port.device_id = server.id
            port.device_owner = COMPUTE_OWNER
            port.host = server.host

    def unplug(self, server_id: str) -> None:
        """Compute deleted the server: the ports it created go (their
        floating IPs are disassociated), ports a user brought are
        detached."""
        with self._cloud.lock:
            for port in self.ports(server_id):
                if port.device_owner == COMPUTE_OWNER:
                    self._cloud.network.remove_port(port)
                else:
                    port.device_id = port.device_owner = ""

    def move(self, server_id: str, host: str) -> None:
        """The server now runs on ``host`` (live migration's switch-over):
        its ports are bound there."""
        with self._cloud.lock:
            for port in self.ports(server_id):
                port.host = host

    def ports(self, server_id: str) -> list[Port]:
        return self._cloud.network.ports_of(server_id)

    def fixed_ips(self, server_id: str) -> tuple[str, ...]:
        return tuple(ip.ip_address for p in self.ports(server_id)
                     for ip in p.fixed_ips)

    def addresses(self, server_id: str) -> dict[str, list[ServerAddress]]:
        """Nova's ``addresses``: per network name, fixed then floating.

        A port's IPv6 addresses come before its IPv4 ones. Nova promises no
        order; clouds that list IPv6 first broke scenarios that took the
        first address, so the devcloud always does.
        """
        with self._cloud.lock:
            addresses: dict[str, list[ServerAddress]] = {}
            for port in self.ports(server_id):
                network = self._cloud.network.find_network(port.network_id)
                entries = addresses.setdefault(network.name, [])
                fixed = sorted(port.fixed_ips, key=lambda ip: ":" not in
                               ip.ip_address)
                entries += [ServerAddress(ip.ip_address, "fixed",
                                          port.mac_address)
                            for ip in fixed]
                entries += [ServerAddress(fip.address, "floating",
                                          port.mac_address)
                            for fip in self._cloud.l3.port_floating_ips(
                                port.id)]
            return addresses
