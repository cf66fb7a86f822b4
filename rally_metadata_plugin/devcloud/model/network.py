"""Neutron's networks, subnets and ports.

Every resource has a project (``tenant_id`` on the wire); a caller sees its
own, admins see all, and everyone sees shared and external networks. The
seeded ``public`` network is external: floating IPs and router gateways are
allocated from its subnet (:mod:`.l3`). Ports are created by users, for
servers (:mod:`.server_ports`) and for router interfaces (:mod:`.l3`).

Subnets are IPv4 or IPv6 (rally's network context makes one of each with
``dualstack: true``). As in neutron, a port on a network gets one address
from an IPv4 subnet, one from a stateful IPv6 subnet (``ipv6_address_mode``
``dhcpv6-stateful`` or unset), and on every SLAAC or DHCPv6-stateless subnet
the EUI-64 address its MAC makes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TYPE_CHECKING

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model.common import (UNSET, Unset,
                                                         apply_updates,
                                                         isotime, lookup,
                                                         new_id,
                                                         owning_project,
                                                         utcnow)
from rally_metadata_plugin.devcloud.model.identity import Caller

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend

PUBLIC_NETWORK = "public"
ROUTER_INTERFACE = "network:router_interface"
#: neutron's IPv6 modes; SLAAC and DHCPv6-stateless derive addresses from
#: the MAC (EUI-64) instead of allocating them
IPV6_MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
AUTO_ADDRESS_MODES = ("slaac", "dhcpv6-stateless")


@dataclasses.dataclass
class Network:
    id: str
    name: str
    project_id: str
    external: bool = False
    shared: bool = False
    subnet_ids: list[str] = dataclasses.field(default_factory=list)
    created_at: str = ""
    description: str = ""


@dataclasses.dataclass(frozen=True)
class AddressRange:
    """An allocation pool: ``start`` .. ``end`` inclusive."""

    start: str
    end: str


@dataclasses.dataclass
class Subnet:
    id: str
    name: str
    network_id: str
    project_id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    dns_nameservers: list[str]
    enable_dhcp: bool = True
    used: set[str] = dataclasses.field(default_factory=set)
    created_at: str = ""
    description: str = ""
    ipv6_address_mode: str | None = None
    ipv6_ra_mode: str | None = None

    @property
    def auto_address(self) -> bool:
        """Addresses come from the MAC (SLAAC, DHCPv6-stateless)."""
        return self.ipv6_address_mode in AUTO_ADDRESS_MODES

    @property
    def allocation_pools(self) -> list[AddressRange]:
        """Every host address but the gateway's, as neutron's default
        pools (IPv4 without network and broadcast addresses, IPv6 without
        the subnet-router anycast address); computed, as a /64 is far too
        big to list."""
        network = ipaddress.ip_network(self.cidr)
        if network.num_addresses == 1:
            return [AddressRange(str(network[0]), str(network[0]))]
        first = network[1]
        last = network[-1] if network.version == 6 else network[-2]
        if network.version == 4 and network.num_addresses == 2:
            first, last = network[0], network[1]       # a /31
        gateway = (ipaddress.ip_address(self.gateway_ip)
                   if self.gateway_ip else None)
        if gateway is None or not first <= gateway <= last or first == last:
            return [AddressRange(str(first), str(last))]
        pools = []
        if first < gateway:
            pools.append(AddressRange(str(first), str(gateway - 1)))
        if gateway < last:
            pools.append(AddressRange(str(gateway + 1), str(last)))
        return pools

    def allocate(self) -> str:
        """Lowest free address of the pools (neutron's is random; lowest is
        easier to read in logs and just as valid)."""
        for pool in self.allocation_pools:
            address = ipaddress.ip_address(pool.start)
            while address <= ipaddress.ip_address(pool.end):
                if str(address) not in self.used:
                    self.used.add(str(address))
                    return str(address)
                address += 1
        raise exc.IpAddressGenerationFailure(self.network_id)

    def eui64(self, mac: str) -> str:
        """The SLAAC address of ``mac`` on this /64 (RFC 4291, appendix A)."""
        octets = [int(part, 16) for part in mac.split(":")]
        octets[0] ^= 0x02
        interface_id = int.from_bytes(bytes(octets[:3] + [0xff, 0xfe]
                                            + octets[3:]), "big")
        address = str(ipaddress.ip_network(self.cidr)[interface_id])
        self.used.add(address)
        return address

    def take(self, address: str) -> bool:
        """Mark a requested address used; False if it already was."""
        if address in self.used:
            return False
        self.used.add(address)
        return True


@dataclasses.dataclass(frozen=True)
class FixedIP:
    subnet_id: str
    ip_address: str


@dataclasses.dataclass
class Port:
    id: str
    name: str
    network_id: str
    project_id: str
    mac_address: str
    fixed_ips: list[FixedIP]
    device_id: str = ""
    device_owner: str = ""
    security_groups: list[str] = dataclasses.field(default_factory=list)
    host: str = ""
    created_at: str = ""
    description: str = ""

    @property
    def status(self) -> str:
        return "ACTIVE" if self.device_id else "DOWN"

    @property
    def subnet_ids(self) -> set[str]:
        return {ip.subnet_id for ip in self.fixed_ips}


class NetworkBackend:
    """Networks, subnets and ports (the lock is the cloud's)."""

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self.networks: dict[str, Network] = {}
        self.subnets: dict[str, Subnet] = {}
        self.ports: dict[str, Port] = {}

    def seed_public(self, owner: str, cidr: str, now: str) -> None:
        """The external ``public`` network and its subnet ``cidr``."""
        public = Network(new_id(), PUBLIC_NETWORK, owner, external=True,
                         created_at=now)
        self.networks[public.id] = public
        network = ipaddress.ip_network(cidr)
        subnet = Subnet(new_id(), "public-subnet", public.id, owner,
                        str(network), 4, str(next(network.hosts())), [],
                        enable_dhcp=False, created_at=now)
        self.subnets[subnet.id] = subnet
        public.subnet_ids.append(subnet.id)

    # -- visibility and queries -----------------------------------------------

    @staticmethod
    def network_visible(caller: Caller, network: Network | None) -> bool:
        return network is not None and (
            caller.owns(network.project_id) or network.shared
            or network.external)

    def _subnet_visible(self, caller: Caller, subnet: Subnet) -> bool:
        return (caller.owns(subnet.project_id)
                or self.networks[subnet.network_id].shared)

    def list_networks(self, caller: Caller) -> list[Network]:
        with self._cloud.lock:
            self._cloud.security.ensure_default_group(caller.project_id)
            return [n for n in self.networks.values()
                    if self.network_visible(caller, n)]

    def list_subnets(self, caller: Caller) -> list[Subnet]:
        with self._cloud.lock:
            return [s for s in self.subnets.values()
                    if self._subnet_visible(caller, s)]

    def list_ports(self, caller: Caller) -> list[Port]:
        with self._cloud.lock:
            return [p for p in self.ports.values()
                    if caller.owns(p.project_id)]

    def get_network(self, caller: Caller, network_id: str) -> Network:
        with self._cloud.lock:
            return lookup(self.networks, network_id,
                          lambda n: self.network_visible(caller, n),
                          exc.NetworkNotFound)

    def _own_network(self, caller: Caller, network_id: str) -> Network:
        """A network the caller may change (seeing it is not enough)."""
        network = self.get_network(caller, network_id)
        if not caller.owns(network.project_id):
            raise exc.NetworkNotFound(network_id)
        return network

    def get_subnet(self, caller: Caller, subnet_id: str) -> Subnet:
        with self._cloud.lock:
            return lookup(self.subnets, subnet_id,
                          lambda s: self._subnet_visible(caller, s),
                          exc.SubnetNotFound)

    def get_port(self, caller: Caller, port_id: str) -> Port:
        with self._cloud.lock:
            return lookup(self.ports, port_id,
                          lambda p: caller.owns(p.project_id),
                          exc.PortNotFound)

    def find_network(self, network_id: str | None) -> Network | None:
        with self._cloud.lock:
            return self.networks.get(network_id or "")

    def internal_networks(self) -> list[Network]:
        """Every network but the external ones, oldest first."""
        with self._cloud.lock:
            return [n for n in self.networks.values() if not n.external]

    def find_port(self, port_id: str | None) -> Port | None:
        """Unscoped lookup (e.g. the port behind a floating IP)."""
        with self._cloud.lock:
            return self.ports.get(port_id or "")

    def ports_of(self, device_id: str) -> list[Port]:
        """The ports a server or a router is plugged into."""
        with self._cloud.lock:
            return [p for p in self.ports.values() if p.device_id == device_id]

    def router_interfaces(self, router_id: str) -> list[Port]:
        return [p for p in self.ports_of(router_id)
                if p.device_owner == ROUTER_INTERFACE]

    def external_subnet(self, network: Network) -> Subnet:
        """The subnet floating IPs and gateways of ``network`` come from."""
        with self._cloud.lock:
            return self.subnets[network.subnet_ids[0]]

    def security_group_in_use(self, group_id: str) -> bool:
        """Whether a port still uses the group (it may not be deleted)."""
        with self._cloud.lock:
            return any(group_id in p.security_groups
                       for p in self.ports.values())

    # -- networks and subnets -------------------------------------------------

    def create_network(self, caller: Caller, *, name: str = "",
                       project_id: str | None = None, external: bool = False,
                       shared: bool = False, description: str = "") -> Network:
        with self._cloud.lock:
            if (external or shared) and not caller.is_admin:
                raise exc.NeutronForbidden("Only admin can create shared or "
                                           "external networks")
            network = Network(new_id(), name,
                              owning_project(caller, project_id),
                              external=external, shared=shared,
                              created_at=isotime(utcnow()),
                              description=description)
            self.networks[network.id] = network
            return network

    def update_network(self, caller: Caller, network_id: str, *,
                       name: str | Unset = UNSET,
                       description: str | Unset = UNSET) -> Network:
        with self._cloud.lock:
            network = self._own_network(caller, network_id)
            apply_updates(network, name=name, description=description)
            return network

    def delete_network(self, caller: Caller, network_id: str) -> None:
        with self._cloud.lock:
            network = self._own_network(caller, network_id)
            if any(p.network_id == network_id for p in self.ports.values()):
                raise exc.NetworkInUse(network_id)
            for subnet_id in list(network.subnet_ids):
                del self.subnets[subnet_id]
            del self.networks[network_id]

    def create_subnet(self, caller: Caller, *, network_id: str, cidr: str,
                      ip_version: int | None = None,
                      gateway_ip: str | None | Unset = UNSET, name: str = "",
                      project_id: str | None = None,
                      dns_nameservers: list[str] | None = None,
                      enable_dhcp: bool = True,
                      description: str = "",
                      ipv6_address_mode: str | None = None,
                      ipv6_ra_mode: str | None = None) -> Subnet:
        """A subnet on a network of the caller's; the gateway defaults to
        the first address of ``cidr``."""
        with self._cloud.lock:
            network = self.get_network(caller, network_id)
            if not caller.owns(network.project_id):
                raise exc.NeutronForbidden(
                    "Only the network owner can add subnets")
            try:
                parsed = ipaddress.ip_network(cidr, strict=True)
            except ValueError as e:
                raise exc.NeutronBadRequest(f"Invalid input for cidr: {e}")
            version = parsed.version if ip_version is None else ip_version
            if version != parsed.version:
                raise exc.NeutronBadRequest("Invalid input: ip_version does "
                                            "not match the cidr")
            _check_ipv6_modes(parsed, ipv6_address_mode, ipv6_ra_mode)
            if gateway_ip is UNSET:
                gateway_ip = str(parsed[1] if parsed.num_addresses > 1
                                 else parsed[0])
            subnet = Subnet(new_id(), name, network.id,
                            owning_project(caller, project_id), str(parsed),
                            version, gateway_ip, list(dns_nameservers or []),
                            enable_dhcp=enable_dhcp,
                            created_at=isotime(utcnow()),
                            description=description,
                            ipv6_address_mode=ipv6_address_mode,
                            ipv6_ra_mode=ipv6_ra_mode)
            self.subnets[subnet.id] = subnet
            network.subnet_ids.append(subnet.id)
            return subnet

    def update_subnet(self, caller: Caller, subnet_id: str, *,
                      name: str | Unset = UNSET,
                      description: str | Unset = UNSET,
                      dns_nameservers: list[str] | Unset = UNSET,
                      enable_dhcp: bool | Unset = UNSET) -> Subnet:
        with self._cloud.lock:
            subnet = self.get_subnet(caller, subnet_id)
            apply_updates(subnet, name=name, description=description,
                          dns_nameservers=dns_nameservers,
                          enable_dhcp=enable_dhcp)
            return subnet

    def delete_subnet(self, caller: Caller, subnet_id: str) -> None:
        with self._cloud.lock:
            subnet = self.get_subnet(caller, subnet_id)
            if not caller.owns(subnet.project_id):
                raise exc.SubnetNotFound(subnet_id)
            if any(subnet_id in p.subnet_ids for p in self.ports.values()):
                raise exc.SubnetInUse(subnet_id)
            self.networks[subnet.network_id].subnet_ids.remove(subnet_id)
            del self.subnets[subnet_id]

    # -- ports ----------------------------------------------------------------

    def new_port(self, network: Network, project_id: str, *, name: str,
                 fixed_ip: str | None = None, subnet_id: str | None = None,
                 security_groups: list[str] | None = None,
                 device_id: str = "", device_owner: str = "",
                 description: str = "") -> Port:
        """A port with addresses on the network's subnets (one IPv4, one
        stateful IPv6, every auto-address IPv6: see the module), or on the
        given subnet only, for users, servers and router interfaces; no
        rule is checked."""
        mac = "fa:16:3e:" + ":".join(f"{self._cloud.rng.randrange(256):02x}"
                                     for _ in range(3))
        subnets = [self.subnets[s] for s in network.subnet_ids
                   if subnet_id in (None, s)]
        if fixed_ip:
            subnets = [s for s in subnets if ipaddress.ip_address(fixed_ip)
                       in ipaddress.ip_network(s.cidr)] or subnets
        fixed_ips = []
        if fixed_ip or subnet_id:
            if subnets:
                subnet = subnets[0]
                if fixed_ip and not subnet.take(fixed_ip):
                    raise exc.IpAddressAlreadyAllocated(fixed_ip, subnet.id)
                fixed_ips.append(FixedIP(subnet.id,
                                         fixed_ip or subnet.allocate()))
        else:
            fixed_ips = self._default_addresses(subnets, mac)
        port = Port(new_id(), name, network.id, project_id, mac, fixed_ips,
                    device_id=device_id, device_owner=device_owner,
                    security_groups=list(security_groups or []),
                    created_at=isotime(utcnow()), description=description)
        self.ports[port.id] = port
        return port

    @staticmethod
    def _default_addresses(subnets: list[Subnet], mac: str) -> list[FixedIP]:
        """Neutron's addresses for a port that asks for none."""
        stateful = [next((s for s in subnets if s.ip_version == version
                          and not s.auto_address), None) for version in (4, 6)]
        addresses = [FixedIP(s.id, s.allocate()) for s in stateful if s]
        addresses += [FixedIP(s.id, s.eui64(mac)) for s in subnets
                      if s.auto_address]
        return addresses

    def create_port(self, caller: Caller, *, network_id: str, name: str = "",
                    project_id: str | None = None, fixed_ip: str | None = None,
                    subnet_id: str | None = None,
                    security_groups: list[str] | None = None,
                    device_id: str = "", device_owner: str = "",
                    description: str = "") -> Port:
        """A user's port; without ``security_groups``, the project's
        ``default`` group."""
        with self._cloud.lock:
            network = self.get_network(caller, network_id)
            project = owning_project(caller, project_id)
            security = self._cloud.security
            security.ensure_default_group(project)
            if security_groups is None:
                security_groups = [security.default_group(project).id]
            return self.new_port(
                network, project, name=name, fixed_ip=fixed_ip,
                subnet_id=subnet_id, security_groups=security_groups,
                device_id=device_id, device_owner=device_owner,
                description=description)

    def update_port(self, caller: Caller, port_id: str, *,
                    name: str | Unset = UNSET,
                    description: str | Unset = UNSET,
                    security_groups: list[str] | Unset = UNSET) -> Port:
        with self._cloud.lock:
            port = self.get_port(caller, port_id)
            apply_updates(port, name=name, description=description,
                          security_groups=security_groups)
            return port

    def delete_port(self, caller: Caller, port_id: str) -> None:
        """A user deletes a port: not a router's; its server (if any) sees
        its addresses change."""
        with self._cloud.changes():
            port = self.get_port(caller, port_id)
            if port.device_owner == ROUTER_INTERFACE:
                raise exc.L3PortInUse(port_id, ROUTER_INTERFACE)
            server = self._cloud.compute.find_server(port.device_id)
            self.remove_port(port)
            if server is not None:
                self._cloud.server_changed(server)

    def remove_port(self, port: Port) -> None:
        """Delete a port without checking any rule: its floating IPs are
        disassociated (:meth:`.L3Backend.port_removed`) and its addresses
        freed. Used by :meth:`delete_port`, server deletion and
        ``remove_router_interface``."""
        self._cloud.l3.port_removed(port.id)
        for ip in port.fixed_ips:
            self.release_address(ip)
        del self.ports[port.id]

    def release_address(self, ip: FixedIP) -> None:
        """The address is free again (a port's, a router gateway's or a
        floating IP's); nothing happens if its subnet is gone."""
        with self._cloud.lock:
            subnet = self.subnets.get(ip.subnet_id)
            if subnet is not None:
                subnet.used.discard(ip.ip_address)


def _check_ipv6_modes(cidr: ipaddress.IPv4Network | ipaddress.IPv6Network,
                      address_mode: str | None, ra_mode: str | None) -> None:
    """Neutron's rules for ``ipv6_address_mode`` and ``ipv6_ra_mode``."""
    for attribute, mode in (("ipv6_address_mode", address_mode),
                            ("ipv6_ra_mode", ra_mode)):
        if mode is None:
            continue
        if mode not in IPV6_MODES:
            raise exc.NeutronBadRequest(
                f"Invalid input for {attribute}. Reason: '{mode}' is not in "
                f"{list(IPV6_MODES)}.")
        if cidr.version != 6:
            raise exc.NeutronBadRequest(
                f"Invalid input for operation: {attribute} is not valid when "
                f"ip_version is 4.")
    if address_mode and ra_mode and address_mode != ra_mode:
        raise exc.NeutronBadRequest(
            f"Invalid input for operation: ipv6_ra_mode set to '{ra_mode}' "
            f"with ipv6_address_mode set to '{address_mode}' is not valid. "
            f"If both attributes are set, they must be the same value.")
    if address_mode in AUTO_ADDRESS_MODES and cidr.prefixlen != 64:
        raise exc.NeutronBadRequest(
            f"Invalid input for operation: Invalid CIDR {cidr} for IPv6 "
            f"address mode. OpenStack uses the EUI-64 address format, which "
            f"requires the prefix to be /64.")
