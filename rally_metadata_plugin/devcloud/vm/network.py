"""Compute hosts as network namespaces, and the paths to and from guests.

Layout (``P`` is this devcloud's prefix, ``rmpvm-<pid>-<n>``)::

    devcloud's namespace (Rally)           host namespace P-compute-1
    ---------------------------            ---------------------------------
    vm<pid>.<n>h1  GW/32  <--- veth --->   uplink   (no address)
    route FIP/32 dev <the guest's host>    lo       169.254.169.254/32,
                                                    FIP/32 of its guests
                                           tap<id>  169.254.0.1/32 --- guest
                                           route FIXED/32 dev tap<id>
                                           nat: FIP <-> FIXED (DNAT + SNAT)

* ``GW`` is the floating network's gateway (its first address); Rally's
  connections to floating IPs leave from it.
* A guest has its fixed IP as a /32 and ``169.254.0.1`` as its gateway,
  which every host namespace answers on every tap with the same MAC
  (:data:`GATEWAY_MAC`): a migrated guest's ARP entry stays right, as with
  a distributed router.
* Its floating IP is NATed one to one in the namespace of the host it runs
  on (as neutron's L3 agent does), and the devcloud's namespace routes the
  floating IP to that host. A live migration publishes the NAT on the
  destination during pre-copy and moves the route while the guest is
  paused: packets in flight at the switchover are lost, TCP retransmits,
  and an SSH session survives with the guest's address moved.
* The metadata address is local in each host namespace (see
  :mod:`.metadata`).

Names carry the devcloud's pid so that :func:`sweep_stale` can remove what
a devcloud killed by SIGKILL left behind, and never touches another live
devcloud's. Everything here needs root and iproute2 + iptables.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import subprocess
import threading

from rally_metadata_plugin.devcloud.vm.image import GATEWAY

LOG = logging.getLogger(__name__)

NS_PREFIX = "rmpvm-"
#: root-side veth names: vm<pid>.<n>h<i> (at most 15 characters)
_LINK = re.compile(r"^vm(\d+)\.(\d+)h\d+$")
_NS = re.compile(r"^rmpvm-(\d+)-(\d+)-")
METADATA_ADDRESS = "169.254.169.254"
#: the guests' gateway (see :data:`.image.GATEWAY`) has one MAC on every
#: tap of every host: after a migration the guest's ARP entry still points
#: at its gateway (a distributed router's MAC is the same on every chassis)
GATEWAY_MAC = "02:00:a9:fe:00:01"
UPLINK = "uplink"


class NetworkError(RuntimeError):
    """An ``ip``/``iptables`` command failed; the message has its stderr."""


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def own_namespaces(prefix: str | None = None) -> list[str]:
    """Namespaces of VM devclouds (of one, with ``prefix``)."""
    text = run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in text.splitlines() if line.strip()]
    return [n for n in names
            if n.startswith(prefix + "-" if prefix else NS_PREFIX)]


def own_links(link_prefix: str | None = None) -> list[str]:
    """Root-side veths of VM devclouds (of one, with ``link_prefix``)."""
    text = run(["ip", "-o", "link", "show"], check=False).stdout
    names = [m.group(1) for m in re.finditer(r"^\d+:\s+([^:@]+)", text, re.M)]
    return [n for n in names if _LINK.match(n)
            and (link_prefix is None or n.startswith(link_prefix))]


def sweep_stale() -> list[str]:
    """Remove namespaces and veths of VM devclouds whose process is gone
    (one killed by SIGKILL); returns what was removed."""
    removed = []
    for name in own_namespaces():
        match = _NS.match(name)
        if match and not _alive(int(match.group(1))):
            run(["ip", "netns", "delete", name], check=False)
            removed.append(name)
    for link in own_links():
        match = _LINK.match(link)
        if match and not _alive(int(match.group(1))):
            run(["ip", "link", "delete", link], check=False)
            removed.append(link)
    return removed


@dataclasses.dataclass(frozen=True)
class Addressing:
    """The floating network's addresses as the namespaces use them."""

    floating_cidr: str

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.floating_cidr).hosts()))


def floating_cidr_in_use(cidr: str) -> str | None:
    """An address of ``cidr`` this namespace already has or routes (None:
    the network is free here)."""
    network = ipaddress.ip_network(cidr)
    text = run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    text += run(["ip", "-4", "route", "show"], check=False).stdout
    for match in re.finditer(r"(\d+\.\d+\.\d+\.\d+)(/\d+)?", text):
        # an address inside it, or a route into it; a wider route (say
        # 172.16.0.0/12 to a container bridge) is no conflict: ours are /32s
        if ipaddress.ip_address(match.group(1)) in network:
            return match.group(0)
    return None


def free_floating_cidr(preferred: str) -> str:
    """``preferred`` when free here, else the first free /24 after it in
    172.24.0.0/16: two devclouds with VM guests on one machine (a test run
    and a user's) then get different floating networks."""
    if floating_cidr_in_use(preferred) is None:
        return preferred
    for third in range(5, 255):
        candidate = f"172.24.{third}.0/24"
        if floating_cidr_in_use(candidate) is None:
            return candidate
    return preferred           # check_free will say that it is taken


class HostNetwork:
    """The namespaces, veths, taps, NAT rules and routes of one devcloud.

    :param serial: tells apart several devclouds of one process.
    """

    def __init__(self, hosts: list[str], floating_cidr: str,
                 serial: int) -> None:
        pid = os.getpid()
        self.prefix = f"{NS_PREFIX}{pid}-{serial}"
        self.link_prefix = f"vm{pid}.{serial}h"
        self.hosts = list(hosts)
        self.addressing = Addressing(floating_cidr)
        self._created: list[str] = []
        self._routes: dict[str, str] = {}         # fip -> host
        self._lock = threading.Lock()

    # -- names ----------------------------------------------------------------------

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def root_link(self, host: str) -> str:
        return f"{self.link_prefix}{self.hosts.index(host) + 1}"

    def _ip(self, host: str, *args: str, check: bool = True) -> None:
        run(["ip", "-n", self.namespace(host), *args], check=check)

    def _iptables(self, host: str, *args: str, check: bool = True) -> None:
        run(["ip", "netns", "exec", self.namespace(host), "iptables", "-w",
             *args], check=check)

    # -- life cycle -----------------------------------------------------------------

    def check_free(self) -> str | None:
        """Why this devcloud's floating network cannot be used here (None:
        it can): another devcloud or this machine already uses it."""
        used = floating_cidr_in_use(self.addressing.floating_cidr)
        if used is None:
            return None
        return (f"the floating network {self.addressing.floating_cidr} is "
                f"already in use on this machine ({used}: another devcloud "
                f"with VM guests?); choose another with --floating-cidr")

    def setup(self) -> None:
        gateway = self.addressing.gateway
        for host in self.hosts:
            ns = self.namespace(host)
            run(["ip", "netns", "add", ns])
            self._created.append(ns)
            link = self.root_link(host)
            run(["ip", "link", "add", link, "type", "veth", "peer", "name",
                 UPLINK, "netns", ns])
            run(["ip", "addr", "add", f"{gateway}/32", "dev", link])
            run(["ip", "link", "set", link, "up"])
            self._ip(host, "link", "set", "lo", "up")
            self._ip(host, "addr", "add", f"{METADATA_ADDRESS}/32", "dev", "lo")
            self._ip(host, "link", "set", UPLINK, "up")
            self._ip(host, "route", "add", gateway, "dev", UPLINK)
            self._ip(host, "route", "add", "default", "via", gateway, "dev",
                     UPLINK)
            # conntrack: a guest that comes back to a host finds its old
            # connections' entries there with long-stale TCP windows; strict
            # tracking would call its packets invalid and leave them un-NATed
            run(["ip", "netns", "exec", ns, "sh", "-c",
                 "echo 1 > /proc/sys/net/ipv4/ip_forward && "
                 "iptables -w -t nat -S >/dev/null && "
                 "echo 1 > /proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"])

    def teardown(self) -> None:
        """Delete every namespace (taps, NAT rules and the veths' peers go
        with them) and every root-side veth left. Idempotent."""
        for ns in own_namespaces(self.prefix):
            run(["ip", "netns", "delete", ns], check=False)
        for link in own_links(self.link_prefix):
            run(["ip", "link", "delete", link], check=False)
        with self._lock:
            self._routes.clear()

    def leftovers(self) -> dict[str, list[str]]:
        return {"namespaces": own_namespaces(self.prefix),
                "links": own_links(self.link_prefix)}

    # -- guests ---------------------------------------------------------------------

    def add_tap(self, host: str, tap: str, fixed_ip: str | None) -> None:
        """A persistent tap for a guest's QEMU, with the guests' gateway
        address and the route to the guest's fixed IP."""
        self._ip(host, "tuntap", "add", "dev", tap, "mode", "tap")
        self._ip(host, "link", "set", tap, "address", GATEWAY_MAC)
        self._ip(host, "addr", "add", f"{GATEWAY}/32", "dev", tap)
        self._ip(host, "link", "set", tap, "up")
        if fixed_ip:
            self._ip(host, "route", "replace", f"{fixed_ip}/32", "dev", tap)

    def remove_tap(self, host: str, tap: str) -> None:
        self._ip(host, "link", "delete", tap, check=False)

    def publish_floating_ip(self, host: str, fip: str, fixed_ip: str) -> None:
        """NAT ``fip`` <-> ``fixed_ip`` on ``host`` (not routed there yet)."""
        # on lo, not on the uplink: removing an uplink's last address would
        # flush the routes through it
        self._ip(host, "addr", "replace", f"{fip}/32", "dev", "lo")
        self._iptables(host, "-t", "nat", "-A", "PREROUTING", "-d",
                       f"{fip}/32", "-j", "DNAT", "--to-destination", fixed_ip)
        self._iptables(host, "-t", "nat", "-A", "POSTROUTING", "-s",
                       f"{fixed_ip}/32", "-o", UPLINK, "-j", "SNAT",
                       "--to-source", fip)

    def withdraw_floating_ip(self, host: str, fip: str, fixed_ip: str) -> None:
        self._ip(host, "addr", "delete", f"{fip}/32", "dev", "lo",
                 check=False)
        self._iptables(host, "-t", "nat", "-D", "PREROUTING", "-d",
                       f"{fip}/32", "-j", "DNAT", "--to-destination", fixed_ip,
                       check=False)
        self._iptables(host, "-t", "nat", "-D", "POSTROUTING", "-s",
                       f"{fixed_ip}/32", "-o", UPLINK, "-j", "SNAT",
                       "--to-source", fip, check=False)

    def drop_metadata(self, host: str, tap: str, dropped: bool) -> None:
        """Drop (or stop dropping) every packet a guest's tap sends to the
        metadata service on ``host``: the ``drop`` outage."""
        rule = ["INPUT", "-i", tap, "-p", "tcp", "-d", METADATA_ADDRESS,
                "--dport", "80", "-j", "DROP"]
        if dropped:
            self._iptables(host, "-I", *rule)
        else:
            self._iptables(host, "-D", *rule, check=False)

    def route_floating_ip(self, fip: str, host: str) -> None:
        """Send the devcloud's traffic for ``fip`` to ``host`` (one ``ip``
        call: this runs while a migrating guest is paused)."""
        run(["ip", "route", "replace", f"{fip}/32", "dev",
             self.root_link(host), "src", self.addressing.gateway])
        with self._lock:
            self._routes[fip] = host

    def unroute_floating_ip(self, fip: str) -> None:
        with self._lock:
            self._routes.pop(fip, None)
        run(["ip", "route", "delete", f"{fip}/32"], check=False)

    def routed_to(self, fip: str) -> str | None:
        with self._lock:
            return self._routes.get(fip)
