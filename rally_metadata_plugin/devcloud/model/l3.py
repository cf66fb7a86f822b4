"""Neutron's L3: routers and floating IPs.

A router's gateway takes an address on an external network; its interfaces
are ports (``network:router_interface``) on tenant subnets. A floating IP
comes from an external network and may be associated to a port only if a
router connects that port's subnet to that network, as neutron requires;
the port's server then shows it in its addresses (and its guest listens on
it), so every association change notifies the server.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model.common import (UNSET, Unset,
                                                         apply_updates,
                                                         isotime, lookup,
                                                         new_id,
                                                         owning_project,
                                                         utcnow)
from rally_metadata_plugin.devcloud.model.identity import Caller
from rally_metadata_plugin.devcloud.model.network import (ROUTER_INTERFACE,
                                                          FixedIP, Port)

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend


@dataclasses.dataclass(frozen=True)
class ExternalGateway:
    """A router's requested gateway: an external network."""

    network_id: str
    enable_snat: bool = True


@dataclasses.dataclass
class Router:
    id: str
    name: str
    project_id: str
    gateway_network_id: str | None = None
    gateway_ips: list[FixedIP] = dataclasses.field(default_factory=list)
    enable_snat: bool = True
    created_at: str = ""
    description: str = ""


@dataclasses.dataclass
class FloatingIP:
    id: str
    project_id: str
    network_id: str
    address: str
    description: str = ""
    port_id: str | None = None
    fixed_ip_address: str | None = None
    router_id: str | None = None
    created_at: str = ""

    @property
    def status(self) -> str:
        return "ACTIVE" if self.port_id else "DOWN"

    def clear_association(self) -> None:
        self.port_id = self.fixed_ip_address = self.router_id = None


class L3Backend:
    """Routers and floating IPs (the lock is the cloud's)."""

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self.routers: dict[str, Router] = {}
        self.floatingips: dict[str, FloatingIP] = {}

    # -- queries --------------------------------------------------------------

    def list_routers(self, caller: Caller) -> list[Router]:
        with self._cloud.lock:
            return [r for r in self.routers.values()
                    if caller.owns(r.project_id)]

    def list_floatingips(self, caller: Caller) -> list[FloatingIP]:
        with self._cloud.lock:
            return [f for f in self.floatingips.values()
                    if caller.owns(f.project_id)]

    def get_router(self, caller: Caller, router_id: str) -> Router:
        with self._cloud.lock:
            return lookup(self.routers, router_id,
                          lambda r: caller.owns(r.project_id),
                          exc.RouterNotFound)

    def get_floatingip(self, caller: Caller, fip_id: str) -> FloatingIP:
        with self._cloud.lock:
            return lookup(self.floatingips, fip_id,
                          lambda f: caller.owns(f.project_id),
                          exc.FloatingIPNotFound)

    def port_floating_ips(self, port_id: str) -> list[FloatingIP]:
        """The floating IPs associated to a port."""
        with self._cloud.lock:
            return [f for f in self.floatingips.values()
                    if f.port_id == port_id]

    def server_floating_ips(self, server_id: str) -> list[str]:
        """The floating addresses of a server's ports, sorted."""
        with self._cloud.lock:
            ports = self._cloud.server_ports.ports(server_id)
            port_ids = {p.id for p in ports}
            return sorted(f.address for f in self.floatingips.values()
                          if f.port_id in port_ids)

    # -- routers --------------------------------------------------------------

    def create_router(self, caller: Caller, *, name: str = "",
                      project_id: str | None = None, description: str = "",
                      gateway: ExternalGateway | None = None) -> Router:
        with self._cloud.lock:
            router = Router(new_id(), name, owning_project(caller, project_id),
                            created_at=isotime(utcnow()),
                            description=description)
            self._set_gateway(caller, router, gateway)
            self.routers[router.id] = router
            return router

    def _set_gateway(self, caller: Caller, router: Router,
                     gateway: ExternalGateway | None) -> None:
        """Release the router's gateway address, then take one on the new
        gateway's network (None: no gateway)."""
        network = self._cloud.network
        for ip in router.gateway_ips:
            network.release_address(ip)
        router.gateway_network_id, router.gateway_ips = None, []
        if gateway is None:
            return
        external = network.get_network(caller, gateway.network_id)
        if not external.external:
            raise exc.NotAnExternalNetwork(external.id)
        subnet = network.external_subnet(external)
        router.gateway_network_id = external.id
        router.gateway_ips = [FixedIP(subnet.id, subnet.allocate())]
        router.enable_snat = gateway.enable_snat

    def update_router(self, caller: Caller, router_id: str, *,
                      name: str | Unset = UNSET,
                      description: str | Unset = UNSET,
                      gateway: ExternalGateway | None | Unset = UNSET
                      ) -> Router:
        with self._cloud.lock:
            router = self.get_router(caller, router_id)
            apply_updates(router, name=name, description=description)
            if gateway is not UNSET:
                self._set_gateway(caller, router, gateway)
            return router

    def delete_router(self, caller: Caller, router_id: str) -> None:
        with self._cloud.lock:
            router = self.get_router(caller, router_id)
            if self._cloud.network.router_interfaces(router_id):
                raise exc.RouterInUse(router_id, "ports")
            if any(f.router_id == router_id
                   for f in self.floatingips.values()):
                raise exc.RouterInUse(router_id, "floating IPs in use")
            self._set_gateway(caller, router, None)
            del self.routers[router_id]

    def add_router_interface(self, caller: Caller, router_id: str, *,
                             port_id: str | None = None,
                             subnet_id: str | None = None
                             ) -> tuple[Router, Port]:
        """Plug the router into a port, or into a new port with the
        subnet's gateway address."""
        network = self._cloud.network
        with self._cloud.lock:
            router = self.get_router(caller, router_id)
            if port_id:
                port = network.get_port(caller, port_id)
                if port.device_id:
                    raise exc.PortInUse(port.id)
            elif subnet_id:
                subnet = network.get_subnet(caller, subnet_id)
                if any(subnet.id in p.subnet_ids
                       for p in network.ports_of(router_id)):
                    raise exc.NeutronBadRequest(
                        f"Router already has a port on subnet {subnet.id}")
                # the interface port has an empty name so rally's cleanup
                # (which matches names) leaves it to remove_router_interface
                port = network.new_port(
                    network.find_network(subnet.network_id),
                    router.project_id, name="", fixed_ip=subnet.gateway_ip,
                    subnet_id=subnet.id)
            else:
                raise exc.NeutronBadRequest(
                    "Either subnet_id or port_id must be specified")
            port.device_id = router.id
            port.device_owner = ROUTER_INTERFACE
            return router, port

    def remove_router_interface(self, caller: Caller, router_id: str, *,
                                port_id: str | None = None,
                                subnet_id: str | None = None
                                ) -> tuple[Router, Port]:
        """Unplug (and delete) the interface port given, or the one on the
        subnet given; not while a floating IP needs it."""
        network = self._cloud.network
        with self._cloud.lock:
            router = self.get_router(caller, router_id)
            interfaces = network.router_interfaces(router_id)
            if port_id:
                found = [p for p in interfaces if p.id == port_id]
            else:
                found = [p for p in interfaces for ip in p.fixed_ips
                         if ip.subnet_id == subnet_id]
            if not found:
                raise exc.RouterInterfaceNotFound(port_id or subnet_id or "")
            port = found[0]
            if any(f.router_id == router_id and f.port_id
                   and self._fixed_subnet(f) in port.subnet_ids
                   for f in self.floatingips.values()):
                raise exc.RouterInterfaceInUseByFloatingIP(router_id)
            network.remove_port(port)
            return router, port

    # -- floating IPs ---------------------------------------------------------

    def create_floatingip(self, caller: Caller, *, network_id: str,
                          project_id: str | None = None,
                          address: str | None = None,
                          port_id: str | None = None,
                          fixed_ip_address: str | None = None,
                          description: str = "") -> FloatingIP:
        """A floating IP from an external network (the given or the next
        free address), associated at once if ``port_id`` is given."""
        with self._cloud.changes():
            network = self._cloud.network.get_network(caller, network_id)
            if not network.external:
                raise exc.NotAnExternalNetwork(network.id)
            subnet = self._cloud.network.external_subnet(network)
            if address:
                if not subnet.take(address):
                    raise exc.IpAddressAlreadyAllocated(address)
            else:
                address = subnet.allocate()
            fip = FloatingIP(new_id(), owning_project(caller, project_id),
                             network.id, address, description=description,
                             created_at=isotime(utcnow()))
            self.floatingips[fip.id] = fip
            if port_id:
                self._associate(caller, fip, port_id, fixed_ip_address)
            return fip

    def update_floatingip(self, caller: Caller, fip_id: str, *,
                          description: str | Unset = UNSET,
                          port_id: str | None | Unset = UNSET,
                          fixed_ip_address: str | None = None) -> FloatingIP:
        """Change the description; (re)associate to ``port_id``, or
        disassociate when it is None."""
        with self._cloud.changes():
            fip = self.get_floatingip(caller, fip_id)
            apply_updates(fip, description=description)
            if port_id is not UNSET:
                self._disassociate(fip)
                if port_id:
                    self._associate(caller, fip, port_id, fixed_ip_address)
            return fip

    def delete_floatingip(self, caller: Caller, fip_id: str) -> None:
        with self._cloud.changes():
            fip = self.get_floatingip(caller, fip_id)
            self._disassociate(fip)
            network = self._cloud.network
            subnet = network.external_subnet(
                network.find_network(fip.network_id))
            network.release_address(FixedIP(subnet.id, fip.address))
            del self.floatingips[fip_id]

    def port_removed(self, port_id: str) -> None:
        """The network deletes a port: its floating IPs are disassociated
        (the network notifies the server, if it wants to)."""
        for fip in self.port_floating_ips(port_id):
            fip.clear_association()

    def _associate(self, caller: Caller, fip: FloatingIP, port_id: str,
                   fixed_ip: str | None) -> None:
        port = self._cloud.network.get_port(caller, port_id)
        internal = _internal_address(port, fixed_ip)
        fixed_ip = internal.ip_address
        if any(f.port_id == port.id and f.fixed_ip_address == fixed_ip
               and f.id != fip.id for f in self.floatingips.values()):
            raise exc.FloatingIPPortAlreadyAssociated(fip.address, port.id,
                                                      fixed_ip)
        router = self._router_towards(fip.network_id, internal.subnet_id)
        if router is None:
            raise exc.ExternalGatewayForFloatingIPNotFound(
                fip.network_id, internal.subnet_id, port.id)
        fip.port_id, fip.fixed_ip_address, fip.router_id = (
            port.id, fixed_ip, router.id)
        self._notify_server_of(port)

    def _disassociate(self, fip: FloatingIP) -> None:
        port = self._cloud.network.find_port(fip.port_id)
        fip.clear_association()
        if port is not None:
            self._notify_server_of(port)

    def _notify_server_of(self, port: Port) -> None:
        server = self._cloud.compute.find_server(port.device_id)
        if server is not None:
            self._cloud.server_changed(server)

    def _fixed_subnet(self, fip: FloatingIP) -> str | None:
        """The subnet of the fixed address a floating IP is associated to."""
        port = self._cloud.network.find_port(fip.port_id)
        return next((ip.subnet_id for ip in port.fixed_ips
                     if ip.ip_address == fip.fixed_ip_address), None)

    def _router_towards(self, external_id: str,
                        subnet_id: str) -> Router | None:
        """A router with a gateway on the external network and an interface
        on the subnet, as neutron requires."""
        for router in self.routers.values():
            if router.gateway_network_id != external_id:
                continue
            for interface in self._cloud.network.router_interfaces(router.id):
                if subnet_id in interface.subnet_ids:
                    return router
        return None


def _internal_address(port: Port, fixed_ip: str | None) -> FixedIP:
    """The port's IPv4 address a floating IP is for, by neutron's rules:
    the one asked for, else the only one."""
    if fixed_ip:
        if ":" in fixed_ip:
            raise exc.NeutronBadRequest(
                f"Cannot process floating IP association with {fixed_ip}, "
                f"since that is not an IPv4 address")
        found = [ip for ip in port.fixed_ips if ip.ip_address == fixed_ip]
        if not found:
            raise exc.NeutronBadRequest(
                f"Port {port.id} does not have fixed ip {fixed_ip}")
        return found[0]
    ipv4 = [ip for ip in port.fixed_ips if ":" not in ip.ip_address]
    if not ipv4:
        raise exc.NeutronBadRequest(f"Cannot add floating IP to port "
                                    f"{port.id} that has no fixed IPv4 "
                                    f"addresses")
    if len(ipv4) > 1:
        raise exc.NeutronBadRequest(
            f"Port {port.id} has multiple fixed IPv4 addresses.  Must provide "
            f"a specific IPv4 address when assigning a floating IP")
    return ipv4[0]
