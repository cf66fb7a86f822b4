"""The cloud model: state and rules of the devcloud, no HTTP, no sockets.

One :class:`CloudBackend` holds everything the Keystone, Nova, Neutron and
Glance API layers share (projects, users, tokens, hosts, flavors, images,
keypairs, servers, networks, ports, floating IPs, migrations, metadata
outages). The guests (SSH + processes) and the metadata service are adapters
that subscribe to changes through :class:`CloudListener`; the live-migration
engine is plugged in as a :class:`Migrator`.

Rules follow what the real services do where rally or the clients depend on
it (see docs/openstack-api-surface.md): resources are scoped by the token's
project, every neutron resource has ``tenant_id``, a booted server owns a
``compute:nova`` port, a floating IP associated to that port shows in the
server's addresses, and so on. Errors are raised as the typed exceptions of
:mod:`.exceptions`, which know their wire format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import ipaddress
import itertools
import random
import re
import threading
import uuid
from typing import Callable, Iterator, Protocol

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import clock
from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud import keys
from rally_metadata_plugin.devcloud.config import DevCloudConfig
from rally_metadata_plugin.devcloud.profiles import OutagePlan

TOKEN_LIFETIME = datetime.timedelta(hours=12)
DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"
PUBLIC_NETWORK = "public"
AVAILABILITY_ZONE = "nova"
DHCP_DOMAIN = "novalocal"


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def isotime(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def sanitize_hostname(name: str) -> str:
    """Nova's rule for turning a display name into a hostname."""
    host = re.sub(r"[ _]", "-", name.lower())
    host = re.sub(r"[^\w.-]+", "", host, flags=re.ASCII)
    host = host.strip(".-")[:63]
    return host or "server"


# -- keystone -----------------------------------------------------------------

@dataclasses.dataclass
class Project:
    id: str
    name: str
    domain_id: str = DEFAULT_DOMAIN_ID


@dataclasses.dataclass
class User:
    id: str
    name: str
    password: str
    project_id: str
    roles: tuple[str, ...]
    domain_id: str = DEFAULT_DOMAIN_ID


@dataclasses.dataclass
class Token:
    id: str
    user: User
    project: Project | None
    issued_at: datetime.datetime
    expires_at: datetime.datetime

    @property
    def roles(self) -> tuple[str, ...]:
        return self.user.roles if self.project else ()


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who makes a request: derived from a validated token."""

    user_id: str
    project_id: str
    is_admin: bool

    @classmethod
    def of(cls, token: Token) -> "Caller":
        if token.project is None:
            raise exc.Unauthorized("The request requires a project-scoped "
                                   "token.")
        return cls(token.user.id, token.project.id, "admin" in token.roles)


# -- compute ------------------------------------------------------------------

@dataclasses.dataclass
class Host:
    """A hypervisor (compute node)."""

    name: str
    int_id: int
    uuid: str


@dataclasses.dataclass
class Flavor:
    id: str
    name: str
    ram: int
    disk: int
    vcpus: int


@dataclasses.dataclass
class Image:
    id: str
    name: str
    size: int
    min_ram: int = 0
    min_disk: int = 0
    status: str = "active"
    visibility: str = "public"
    disk_format: str = "qcow2"
    container_format: str = "bare"
    owner: str = ""
    created_at: str = ""


@dataclasses.dataclass
class Keypair:
    name: str
    user_id: str
    public_key: str
    fingerprint: str
    type: str = "ssh"
    created_at: str = ""


@dataclasses.dataclass
class Server:
    id: str
    name: str
    seq: int                      # creation order, seeds per-server draws
    project_id: str
    user_id: str
    image_id: str
    flavor_id: str
    key_name: str | None
    security_groups: list[str]
    host: str
    created_at: str
    updated_at: str
    hostname: str
    launch_index: int = 0
    status: str = "BUILD"
    task_state: str | None = "spawning"
    fault: dict | None = None
    launched_at: str | None = None
    migrations: int = 0
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def vm_state(self) -> str:
        return {"BUILD": "building", "ACTIVE": "active",
                "MIGRATING": "active", "ERROR": "error"}.get(
                    self.status, self.status.lower())

    @property
    def power_state(self) -> int:
        return 1 if self.status in ("ACTIVE", "MIGRATING") else 0


@dataclasses.dataclass
class ServerGroup:
    id: str
    name: str
    policies: list[str]
    project_id: str
    user_id: str
    members: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Outage:
    """A metadata-service outage as served to one server.

    A request arriving at ``start <= t < end`` fails in the way ``kind``
    says; ``end`` is None for an outage that lasts until the server goes.
    ``decoy`` is the other instance a ``wrong_instance`` outage answers with.
    """

    server_id: str
    migration_id: str
    host: str
    kind: str
    start: float
    end: float | None
    decoy: "InstanceIdentity | None" = None

    def covers(self, at: float) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclasses.dataclass
class Migration:
    id: str
    server_id: str
    index: int                    # 1-based, per server
    source: str
    destination: str
    requested_at: float
    status: str = "running"


@dataclasses.dataclass(frozen=True)
class InstanceIdentity:
    """What the metadata service tells an instance about itself."""

    uuid: str
    name: str
    hostname: str
    project_id: str
    launch_index: int
    availability_zone: str
    public_keys: dict[str, str]
    fixed_ips: tuple[str, ...]
    floating_ips: tuple[str, ...]
    ec2_id: str


@dataclasses.dataclass(frozen=True)
class MetadataView:
    """What a metadata request arriving at some instant gets."""

    host: str
    outage: Outage | None
    identity: InstanceIdentity


# -- network ------------------------------------------------------------------

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

    @property
    def allocation_pools(self) -> list[dict]:
        hosts = list(ipaddress.ip_network(self.cidr).hosts())
        if self.gateway_ip and len(hosts) > 1:
            hosts = [h for h in hosts if str(h) != self.gateway_ip]
        if not hosts:
            return []
        return [{"start": str(hosts[0]), "end": str(hosts[-1])}]

    def allocate(self) -> str:
        """Lowest free address of the pool (neutron's is random; lowest is
        easier to read in logs and just as valid)."""
        for pool in self.allocation_pools:
            start = ipaddress.ip_address(pool["start"])
            end = ipaddress.ip_address(pool["end"])
            address = start
            while address <= end:
                if str(address) not in self.used:
                    self.used.add(str(address))
                    return str(address)
                address += 1
        raise exc.NeutronConflict(
            f"No more IP addresses available on network {self.network_id}.",
            type="IpAddressGenerationFailure")


@dataclasses.dataclass
class Port:
    id: str
    name: str
    network_id: str
    project_id: str
    mac_address: str
    fixed_ips: list[dict]         # [{"subnet_id", "ip_address"}]
    device_id: str = ""
    device_owner: str = ""
    security_groups: list[str] = dataclasses.field(default_factory=list)
    host: str = ""
    created_at: str = ""
    description: str = ""

    @property
    def status(self) -> str:
        return "ACTIVE" if self.device_id else "DOWN"


@dataclasses.dataclass
class Router:
    id: str
    name: str
    project_id: str
    gateway_network_id: str | None = None
    gateway_ips: list[dict] = dataclasses.field(default_factory=list)
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


@dataclasses.dataclass
class SecurityGroupRule:
    id: str
    security_group_id: str
    project_id: str
    direction: str
    ethertype: str
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None
    description: str = ""
    created_at: str = ""

    def key(self) -> tuple:
        """Identity for duplicate detection: "everything" prefixes equal
        no prefix, as in neutron."""
        prefix = (None if self.remote_ip_prefix in ("0.0.0.0/0", "::/0")
                  else self.remote_ip_prefix)
        return (self.direction, self.ethertype, self.protocol,
                self.port_range_min, self.port_range_max, prefix,
                self.remote_group_id)


@dataclasses.dataclass
class SecurityGroup:
    id: str
    name: str
    project_id: str
    description: str = ""
    rules: list[SecurityGroupRule] = dataclasses.field(default_factory=list)
    created_at: str = ""


ROUTER_INTERFACE = "network:router_interface"
COMPUTE_OWNER = "compute:nova"


# -- plug-in points -------------------------------------------------------------

class CloudListener(Protocol):
    """An adapter that follows the model (guests, metadata service)."""

    def server_changed(self, server: Server) -> None:
        """Status, host or addresses of the server may have changed."""

    def server_deleted(self, server: Server) -> None:
        """The server is gone; release everything it had."""

    def outage_added(self, outage: Outage) -> None:
        """A metadata outage was scheduled for a server."""


class Migrator(Protocol):
    """Runs live migrations (the fault model lives behind this)."""

    def choose_destination(self, server: Server,
                           candidates: list[str]) -> str:
        """Pick the destination host among ``candidates``."""

    def start(self, migration: Migration) -> None:
        """Drive the migration asynchronously; report back to the backend."""


class Scheduling(Protocol):
    def call_later(self, delay: float, func: Callable[[], None]) -> None:
        """Run ``func`` after ``delay`` seconds."""


# -- the backend ----------------------------------------------------------------

class CloudBackend:
    """The whole simulated cloud. Thread-safe: one re-entrant lock.

    Listeners are notified after the lock is released, in the order the
    changes happened, so an adapter may call back into the backend.
    """

    def __init__(self, config: DevCloudConfig, scheduler: Scheduling,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._scheduler = scheduler
        self._rng = rng or random.Random(config.seed)
        self._lock = threading.RLock()
        self._pending = threading.local()
        self.listeners: list[CloudListener] = []
        self.migrator: Migrator | None = None
        self._seq = itertools.count(1)

        self.projects: dict[str, Project] = {}
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}
        self.hosts: list[Host] = []
        self.flavors: dict[str, Flavor] = {}
        self.images: dict[str, Image] = {}
        self.keypairs: dict[tuple[str, str], Keypair] = {}
        self.servers: dict[str, Server] = {}
        self.server_groups: dict[str, ServerGroup] = {}
        self.migrations: dict[str, Migration] = {}
        self.outages: dict[str, list[Outage]] = {}
        self.networks: dict[str, Network] = {}
        self.subnets: dict[str, Subnet] = {}
        self.ports: dict[str, Port] = {}
        self.routers: dict[str, Router] = {}
        self.floatingips: dict[str, FloatingIP] = {}
        self.security_groups: dict[str, SecurityGroup] = {}
        self._seed()

    # -- plumbing --------------------------------------------------------------

    @contextlib.contextmanager
    def _changes(self) -> Iterator[list[Callable[[], None]]]:
        """Hold the lock; run the queued notifications once released."""
        outermost = not getattr(self._pending, "active", False)
        if outermost:
            self._pending.active = True
            self._pending.events = []
        try:
            with self._lock:
                yield self._pending.events
        finally:
            if outermost:
                events, self._pending.events = self._pending.events, []
                self._pending.active = False
                for event in events:
                    event()

    def _notify_changed(self, events: list, server: Server) -> None:
        for listener in self.listeners:
            events.append(lambda l=listener: l.server_changed(server))

    def _seed(self) -> None:
        now = isotime(utcnow())
        for spec in self.config.users:
            project = Project(new_id().replace("-", ""), spec.project)
            self.projects[project.id] = project
            roles = ("admin", "member", "reader") if spec.admin else (
                "member", "reader")
            user = User(new_id().replace("-", ""), spec.name, spec.password,
                        project.id, roles)
            self.users[user.id] = user
        for i in range(1, self.config.hypervisors + 1):
            self.hosts.append(Host(f"compute-{i}", i, new_id()))
        for flavor in (Flavor("1", "m1.tiny", 512, 1, 1),
                       Flavor("2", "m1.small", 2048, 20, 1),
                       Flavor("42", "m1.nano", 128, 1, 1)):
            self.flavors[flavor.id] = flavor
        image = Image(new_id(), "cirros", size=16 * 1024 * 1024,
                      owner=self.admin_project.id, created_at=now)
        self.images[image.id] = image
        public = Network(new_id(), PUBLIC_NETWORK, self.admin_project.id,
                         external=True, created_at=now)
        self.networks[public.id] = public
        cidr = ipaddress.ip_network(self.config.floating_cidr)
        subnet = Subnet(new_id(), "public-subnet", public.id,
                        self.admin_project.id, str(cidr), 4,
                        str(next(cidr.hosts())), [], enable_dhcp=False,
                        created_at=now)
        self.subnets[subnet.id] = subnet
        public.subnet_ids.append(subnet.id)

    def leftovers(self) -> dict[str, list[str]]:
        """Resources created through the APIs that still exist, by kind.

        The seeded ones (hosts, flavors, the image, the public network) are
        left out, as are the ``default`` security groups rally's cleanup skips
        on purpose; anything else still here when a task has finished leaked.
        """
        with self._lock:
            return {
                "servers": sorted(self.servers),
                "ports": sorted(self.ports),
                "floatingips": sorted(self.floatingips),
                "routers": sorted(self.routers),
                "networks": sorted(n.id for n in self.networks.values() if not n.external),
                "security_groups": sorted(g.id for g in self.security_groups.values()
                                          if g.name != "default"),
                "keypairs": sorted(f"{owner}/{name}" for owner, name in self.keypairs),
            }

    @property
    def admin_project(self) -> Project:
        admin = next(u for u in self.users.values() if "admin" in u.roles)
        return self.projects[admin.project_id]

    @property
    def public_network(self) -> Network:
        return next(n for n in self.networks.values()
                    if n.name == PUBLIC_NETWORK and n.external)

    # -- keystone ---------------------------------------------------------------

    def authenticate(self, *, user_name: str | None, user_id: str | None,
                     password: str, project_name: str | None = None,
                     project_id: str | None = None) -> Token:
        """Password authentication; domains are all ``Default``."""
        with self._lock:
            user = next((u for u in self.users.values()
                         if (user_id and u.id == user_id)
                         or (not user_id and u.name == user_name)), None)
            if user is None or user.password != password:
                raise exc.Unauthorized("The request you have made requires "
                                       "authentication.")
            return self._issue_token(user, project_name, project_id)

    def rescope(self, token_id: str, project_name: str | None,
                project_id: str | None) -> Token:
        """The ``token`` auth method: a new token for the same user."""
        with self._lock:
            return self._issue_token(self.validate_token(token_id).user,
                                     project_name, project_id)

    def _issue_token(self, user: User, project_name: str | None,
                     project_id: str | None) -> Token:
        project = None
        if project_name or project_id:
            project = next((p for p in self.projects.values()
                            if p.id == project_id or
                            (not project_id and p.name == project_name)),
                           None)
            if project is None or project.id != user.project_id:
                raise exc.Unauthorized(
                    f"User {user.id} has no access to project "
                    f"{project_id or project_name}")
        issued = utcnow()
        token = Token(uuid.uuid4().hex, user, project, issued,
                      issued + TOKEN_LIFETIME)
        self.tokens[token.id] = token
        return token

    def validate_token(self, token_id: str | None) -> Token:
        with self._lock:
            token = self.tokens.get(token_id or "")
            if token is None or token.expires_at <= utcnow():
                raise exc.Unauthorized("The request you have made requires "
                                       "authentication.")
            return token

    def revoke_token(self, token_id: str) -> None:
        with self._lock:
            if self.tokens.pop(token_id, None) is None:
                raise exc.KeystoneNotFound(f"Could not find token: "
                                           f"{token_id}.")

    # -- flavors, images, hosts ---------------------------------------------------

    def get_flavor(self, flavor_id: str) -> Flavor:
        flavor = self.flavors.get(str(flavor_id))
        if flavor is None:
            raise exc.NovaNotFound(f"Flavor {flavor_id} could not be found.")
        return flavor

    def list_images(self) -> list[Image]:
        with self._lock:
            return sorted(self.images.values(),
                          key=lambda i: (i.created_at, i.id), reverse=True)

    def get_image(self, image_id: str) -> Image:
        image = self.images.get(image_id)
        if image is None:
            raise exc.GlanceNotFound(f"No image found with ID {image_id}")
        return image

    def get_host(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

    def running_vms(self, host: Host) -> int:
        with self._lock:
            return sum(1 for s in self.servers.values() if s.host == host.name)

    # -- keypairs -----------------------------------------------------------------

    def list_keypairs(self, caller: Caller) -> list[Keypair]:
        with self._lock:
            return sorted((k for (uid, _), k in self.keypairs.items()
                           if uid == caller.user_id), key=lambda k: k.name)

    def get_keypair(self, caller: Caller, name: str) -> Keypair:
        with self._lock:
            keypair = self.keypairs.get((caller.user_id, name))
            if keypair is None:
                raise exc.NovaNotFound(f"Keypair {name} not found for user "
                                       f"{caller.user_id}")
            return keypair

    def create_keypair(self, caller: Caller, name: str,
                       public_key: str | None, key_type: str = "ssh"
                       ) -> tuple[Keypair, str | None]:
        """Import ``public_key`` or generate a pair.

        :returns: the keypair and the private key (only when generated).
        """
        if not re.fullmatch(r"[\w .@-]{1,255}", name):
            raise exc.NovaBadRequest("Keypair data is invalid: Keypair name "
                                     "contains unsafe characters")
        private = None
        if public_key is None:
            private, public_key = keys.generate_rsa_keypair()
        try:
            fingerprint = keys.fingerprint(public_key)
        except ValueError as e:
            raise exc.NovaBadRequest(f"Keypair data is invalid: {e}")
        with self._lock:
            if (caller.user_id, name) in self.keypairs:
                raise exc.NovaConflict(f"Key pair '{name}' already exists.")
            keypair = Keypair(name, caller.user_id, public_key.strip(),
                              fingerprint, key_type, isotime(utcnow()))
            self.keypairs[(caller.user_id, name)] = keypair
            return keypair, private

    def delete_keypair(self, caller: Caller, name: str) -> None:
        with self._lock:
            self.get_keypair(caller, name)
            del self.keypairs[(caller.user_id, name)]

    # -- servers ------------------------------------------------------------------

    def _visible_server(self, caller: Caller, server_id: str) -> Server:
        server = self.servers.get(server_id)
        if server is None or not (caller.is_admin or
                                  server.project_id == caller.project_id):
            raise exc.ServerNotFound(server_id)
        return server

    def get_server(self, caller: Caller, server_id: str) -> Server:
        with self._lock:
            return self._visible_server(caller, server_id)

    def find_server(self, server_id: str) -> Server | None:
        """Unscoped lookup for the adapters."""
        with self._lock:
            return self.servers.get(server_id)

    def list_servers(self, caller: Caller, *, all_tenants: bool = False,
                     marker: str | None = None, limit: int | None = None,
                     name: str | None = None, status: str | None = None
                     ) -> list[Server]:
        """Nova's default order (newest first) with marker paging."""
        with self._lock:
            servers = [s for s in self.servers.values()
                       if s.project_id == caller.project_id or
                       (all_tenants and caller.is_admin)]
            if name:
                servers = [s for s in servers if re.search(name, s.name)]
            if status:
                servers = [s for s in servers if s.status == status.upper()]
            servers.sort(key=lambda s: (s.created_at, s.seq), reverse=True)
            if marker is not None:
                ids = [s.id for s in servers]
                if marker not in ids:
                    raise exc.MarkerNotFound(marker)
                servers = servers[ids.index(marker) + 1:]
            return servers[:limit] if limit is not None else servers

    def create_server(self, caller: Caller, *, name: str, image_id: str,
                      flavor_id: str, key_name: str | None,
                      networks: list[dict] | str | None,
                      security_groups: list[str], count: int = 1,
                      metadata: dict | None = None) -> list[Server]:
        """Boot ``count`` servers; each gets ports on the given networks.

        ``networks`` is nova's list of ``{"uuid"|"port", "fixed_ip"}``,
        ``"auto"``/``"none"``, or None (every network of the project).
        """
        with self._changes() as events:
            if image_id not in self.images:
                raise exc.NovaBadRequest(f"Image {image_id} could not be "
                                         f"found.")
            if str(flavor_id) not in self.flavors:
                raise exc.NovaBadRequest(f"Flavor {flavor_id} could not be "
                                         f"found.")
            if key_name is not None and (
                    caller.user_id, key_name) not in self.keypairs:
                raise exc.NovaBadRequest("Invalid key_name provided.")
            self._ensure_default_security_group(caller.project_id)
            sg_ids = [self._resolve_security_group(caller, sg)
                      for sg in security_groups or ["default"]]
            requested = self._requested_networks(caller, networks)
            created = []
            for index in range(count):
                display = name if count == 1 else f"{name}-{index + 1}"
                now = isotime(utcnow())
                server = Server(
                    id=new_id(), name=display, seq=next(self._seq),
                    project_id=caller.project_id, user_id=caller.user_id,
                    image_id=image_id, flavor_id=str(flavor_id),
                    key_name=key_name,
                    security_groups=[self.security_groups[i].name
                                     for i in sg_ids],
                    host=self._place(), created_at=now, updated_at=now,
                    hostname=sanitize_hostname(display), launch_index=index,
                    metadata=dict(metadata or {}))
                self.servers[server.id] = server
                for request in requested:
                    self._plug_server(server, request, sg_ids)
                created.append(server)
                self._notify_changed(events, server)
                self._scheduler.call_later(
                    self.config.boot_seconds,
                    lambda sid=server.id: self._finish_boot(sid))
            return created

    def _requested_networks(self, caller: Caller,
                            networks: list[dict] | str | None) -> list[dict]:
        if networks == "none":
            return []
        if networks is None or networks == "auto":
            own = [n for n in self.networks.values()
                   if n.project_id == caller.project_id and not n.external]
            shared = [n for n in self.networks.values()
                      if n.shared and not n.external]
            return [{"uuid": n.id} for n in (own or shared)]
        for request in networks:
            if "port" in request and request["port"]:
                port = self.ports.get(request["port"])
                if port is None or port.device_id or not (
                        caller.is_admin or port.project_id ==
                        caller.project_id):
                    raise exc.NovaBadRequest(
                        f"Port {request['port']} not found or in use.")
            elif not self._network_visible(
                    caller, self.networks.get(request.get("uuid", ""))):
                raise exc.NovaBadRequest(
                    f"Network {request.get('uuid')} could not be found.")
        return networks

    def _place(self) -> str:
        """Least loaded host, lowest index first: deterministic."""
        load = {h.name: 0 for h in self.hosts}
        for server in self.servers.values():
            load[server.host] = load.get(server.host, 0) + 1
        return min(self.hosts, key=lambda h: (load[h.name], h.int_id)).name

    def _plug_server(self, server: Server, request: dict,
                     sg_ids: list[str]) -> None:
        if request.get("port"):
            port = self.ports[request["port"]]
        else:
            network = self.networks[request["uuid"]]
            port = self._new_port(network, server.project_id, name="",
                                  fixed_ip=request.get("fixed_ip"),
                                  security_groups=sg_ids)
        port.device_id = server.id
        port.device_owner = COMPUTE_OWNER
        port.host = server.host

    def _finish_boot(self, server_id: str) -> None:
        with self._changes() as events:
            server = self.servers.get(server_id)
            if server is None or server.status != "BUILD":
                return
            server.status = "ACTIVE"
            server.task_state = None
            server.launched_at = server.updated_at = isotime(utcnow())
            self._notify_changed(events, server)

    def delete_server(self, caller: Caller, server_id: str) -> None:
        """Delete at once: ports go, floating IPs are disassociated."""
        with self._changes() as events:
            server = self._visible_server(caller, server_id)
            del self.servers[server_id]
            for port in [p for p in self.ports.values()
                         if p.device_id == server_id]:
                if port.device_owner == COMPUTE_OWNER:
                    self._delete_port(port)
                else:
                    port.device_id = port.device_owner = ""
            for group in self.server_groups.values():
                if server_id in group.members:
                    group.members.remove(server_id)
            self.outages.pop(server_id, None)
            for listener in self.listeners:
                events.append(lambda l=listener: l.server_deleted(server))

    def server_ports(self, server_id: str) -> list[Port]:
        with self._lock:
            return [p for p in self.ports.values() if p.device_id == server_id]

    def server_addresses(self, server: Server) -> dict[str, list[dict]]:
        """Nova's ``addresses``: per network name, fixed then floating."""
        with self._lock:
            addresses: dict[str, list[dict]] = {}
            for port in self.server_ports(server.id):
                network = self.networks[port.network_id]
                entries = addresses.setdefault(network.name, [])
                for ip in port.fixed_ips:
                    entries.append(self._address(ip["ip_address"], "fixed",
                                                 port))
                for fip in self.floatingips.values():
                    if fip.port_id == port.id:
                        entries.append(self._address(fip.address, "floating",
                                                     port))
            return addresses

    @staticmethod
    def _address(address: str, kind: str, port: Port) -> dict:
        return {"addr": address,
                "version": ipaddress.ip_address(address).version,
                "OS-EXT-IPS:type": kind,
                "OS-EXT-IPS-MAC:mac_addr": port.mac_address}

    def server_floating_ips(self, server_id: str) -> list[str]:
        with self._lock:
            port_ids = {p.id for p in self.server_ports(server_id)}
            return sorted(f.address for f in self.floatingips.values()
                          if f.port_id in port_ids)

    def identity(self, server: Server) -> InstanceIdentity:
        with self._lock:
            keypair = self.keypairs.get((server.user_id, server.key_name or ""))
            fixed = tuple(ip["ip_address"]
                          for p in self.server_ports(server.id)
                          for ip in p.fixed_ips)
            return InstanceIdentity(
                uuid=server.id, name=server.name,
                hostname=f"{server.hostname}.{DHCP_DOMAIN}",
                project_id=server.project_id,
                launch_index=server.launch_index,
                availability_zone=AVAILABILITY_ZONE,
                public_keys=({keypair.name: keypair.public_key}
                             if keypair else {}),
                fixed_ips=fixed,
                floating_ips=tuple(self.server_floating_ips(server.id)),
                ec2_id=f"i-{server.seq:08x}")

    def console_output(self, caller: Caller, server_id: str) -> str:
        with self._lock:
            server = self._visible_server(caller, server_id)
            return (f"devcloud guest {server.hostname} on {server.host}\n"
                    f"{server.hostname} login: \n")

    # -- live migration ---------------------------------------------------------

    def live_migrate(self, caller: Caller, server_id: str,
                     host: str | None) -> Migration:
        """Validate and start a live migration (admin only, like nova's
        default policy)."""
        with self._changes() as events:
            if not caller.is_admin:
                raise exc.NovaForbidden(
                    "Policy doesn't allow os_compute_api:os-migrate-server:"
                    "migrate_live to be performed.")
            server = self._visible_server(caller, server_id)
            if server.status != "ACTIVE":
                raise exc.InstanceInvalidState(
                    server.id, server.vm_state if server.status != "MIGRATING"
                    else "active (task_state migrating)", "os-migrateLive")
            if host is not None:
                if self.get_host(host) is None:
                    raise exc.NovaBadRequest(f"Compute host {host} could not "
                                             f"be found.")
                if host == server.host:
                    raise exc.NovaBadRequest(
                        f"Unable to migrate instance ({server.id}) to "
                        f"current host ({host}).")
                destination = host
            else:
                candidates = [h.name for h in self.hosts
                              if h.name != server.host]
                if not candidates or self.migrator is None:
                    raise exc.NovaBadRequest("No valid host was found. ")
                destination = self.migrator.choose_destination(server,
                                                               candidates)
            if self.migrator is None:
                raise exc.NovaBadRequest("Live migration is not available.")
            server.migrations += 1
            migration = Migration(new_id(), server.id, server.migrations,
                                  server.host, destination, clock.now())
            self.migrations[migration.id] = migration
            server.status = "MIGRATING"
            server.task_state = "migrating"
            server.updated_at = isotime(utcnow())
            self._notify_changed(events, server)
        self.migrator.start(migration)
        return migration

    def switch_over(self, migration: Migration,
                    outage: OutagePlan | None) -> Outage | None:
        """The guest now runs on the destination: switch the host and
        schedule the destination's metadata outage (the status stays
        MIGRATING until :meth:`complete_migration`).

        :returns: the scheduled outage, or None (no outage, or the server
            was deleted meanwhile).
        """
        with self._changes() as events:
            server = self.servers.get(migration.server_id)
            if server is None:
                migration.status = "aborted"
                return None
            now = clock.now()
            server.host = migration.destination
            server.updated_at = isotime(utcnow())
            for port in self.server_ports(server.id):
                port.host = server.host
            migration.status = "switched"
            scheduled = None
            if outage is not None:
                start = now + outage.delay
                end = None if outage.duration is None else (
                    start + outage.duration)
                decoy = (self._decoy(server)
                         if outage.kind == FaultKind.WRONG_INSTANCE else None)
                scheduled = Outage(server.id, migration.id, server.host,
                                   outage.kind, start, end, decoy)
                self.outages.setdefault(server.id, []).append(scheduled)
                for listener in self.listeners:
                    events.append(
                        lambda l=listener: l.outage_added(scheduled))
            self._notify_changed(events, server)
            return scheduled

    def complete_migration(self, migration: Migration) -> bool:
        """Post-migration: ACTIVE on the destination (False: server gone)."""
        with self._changes() as events:
            server = self.servers.get(migration.server_id)
            if server is None:
                migration.status = "aborted"
                return False
            server.status = "ACTIVE"
            server.task_state = None
            server.updated_at = isotime(utcnow())
            migration.status = "completed"
            self._notify_changed(events, server)
            return True

    def fail_migration(self, migration: Migration, message: str,
                       code: int) -> bool:
        """The migration failed: the server stays on the source, in ERROR."""
        with self._changes() as events:
            server = self.servers.get(migration.server_id)
            migration.status = "error" if server else "aborted"
            if server is None:
                return False
            server.status = "ERROR"
            server.task_state = None
            server.updated_at = isotime(utcnow())
            server.fault = {"message": message, "code": code,
                            "created": server.updated_at}
            self._notify_changed(events, server)
            return True

    def _decoy(self, server: Server) -> InstanceIdentity:
        """Another instance's identity: a real neighbour if there is one."""
        others = sorted((s for s in self.servers.values()
                         if s.id != server.id), key=lambda s: s.seq)
        if others:
            return self.identity(others[0])
        ghost = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        return dataclasses.replace(
            self.identity(server), uuid=ghost, name="ghost",
            hostname=f"ghost.{DHCP_DOMAIN}", ec2_id="i-ffffffff")

    def metadata_view(self, server_id: str, at: float) -> MetadataView | None:
        """What the metadata service of the server's current host answers
        to a request arriving at ``at`` (None: the server is gone)."""
        with self._lock:
            server = self.servers.get(server_id)
            if server is None:
                return None
            active = [o for o in self.outages.get(server_id, [])
                      if o.covers(at)]
            outage = max(active, key=lambda o: o.start) if active else None
            return MetadataView(server.host, outage, self.identity(server))

    def refused_at(self, server_id: str, at: float) -> bool:
        with self._lock:
            return any(o.kind == FaultKind.REFUSED and o.covers(at)
                       for o in self.outages.get(server_id, []))

    # -- server groups ------------------------------------------------------------

    def list_server_groups(self, caller: Caller) -> list[ServerGroup]:
        with self._lock:
            return [g for g in self.server_groups.values()
                    if g.project_id == caller.project_id]

    def create_server_group(self, caller: Caller, name: str,
                            policies: list[str]) -> ServerGroup:
        with self._lock:
            group = ServerGroup(new_id(), name, policies, caller.project_id,
                                caller.user_id)
            self.server_groups[group.id] = group
            return group

    def get_server_group(self, caller: Caller, group_id: str) -> ServerGroup:
        with self._lock:
            group = self.server_groups.get(group_id)
            if group is None or (group.project_id != caller.project_id
                                 and not caller.is_admin):
                raise exc.NovaNotFound(f"Server group {group_id} could not "
                                       f"be found.")
            return group

    def delete_server_group(self, caller: Caller, group_id: str) -> None:
        with self._lock:
            self.get_server_group(caller, group_id)
            del self.server_groups[group_id]

    # -- neutron: visibility --------------------------------------------------------

    def _network_visible(self, caller: Caller, network: Network | None
                         ) -> bool:
        return network is not None and (
            caller.is_admin or network.project_id == caller.project_id
            or network.shared or network.external)

    def _owned(self, caller: Caller, resource) -> bool:
        return caller.is_admin or resource.project_id == caller.project_id

    def visible_networks(self, caller: Caller) -> list[Network]:
        with self._lock:
            self._ensure_default_security_group(caller.project_id)
            return [n for n in self.networks.values()
                    if self._network_visible(caller, n)]

    def visible_subnets(self, caller: Caller) -> list[Subnet]:
        with self._lock:
            return [s for s in self.subnets.values()
                    if self._owned(caller, s)
                    or self.networks[s.network_id].shared]

    def visible_ports(self, caller: Caller) -> list[Port]:
        with self._lock:
            return [p for p in self.ports.values() if self._owned(caller, p)]

    def visible_routers(self, caller: Caller) -> list[Router]:
        with self._lock:
            return [r for r in self.routers.values()
                    if self._owned(caller, r)]

    def visible_floatingips(self, caller: Caller) -> list[FloatingIP]:
        with self._lock:
            return [f for f in self.floatingips.values()
                    if self._owned(caller, f)]

    def visible_security_groups(self, caller: Caller) -> list[SecurityGroup]:
        with self._lock:
            self._ensure_default_security_group(caller.project_id)
            return [g for g in self.security_groups.values()
                    if self._owned(caller, g)]

    def visible_security_group_rules(self, caller: Caller
                                     ) -> list[SecurityGroupRule]:
        return [r for g in self.visible_security_groups(caller)
                for r in g.rules]

    def _get(self, table: dict, kind: str, caller: Caller, resource_id: str,
             visible: Callable[[object], bool] | None = None):
        with self._lock:
            resource = table.get(resource_id)
            ok = resource is not None and (
                visible(resource) if visible else self._owned(caller, resource))
            if not ok:
                raise exc.NeutronNotFound(kind, resource_id)
            return resource

    def get_network(self, caller: Caller, network_id: str) -> Network:
        return self._get(self.networks, "Network", caller, network_id,
                         lambda n: self._network_visible(caller, n))

    def get_subnet(self, caller: Caller, subnet_id: str) -> Subnet:
        return self._get(self.subnets, "Subnet", caller, subnet_id,
                         lambda s: self._owned(caller, s)
                         or self.networks[s.network_id].shared)

    def get_port(self, caller: Caller, port_id: str) -> Port:
        return self._get(self.ports, "Port", caller, port_id)

    def get_router(self, caller: Caller, router_id: str) -> Router:
        return self._get(self.routers, "Router", caller, router_id)

    def get_floatingip(self, caller: Caller, fip_id: str) -> FloatingIP:
        return self._get(self.floatingips, "FloatingIP", caller, fip_id)

    def get_security_group(self, caller: Caller, sg_id: str) -> SecurityGroup:
        with self._lock:
            self._ensure_default_security_group(caller.project_id)
            return self._get(self.security_groups, "SecurityGroup", caller,
                             sg_id)

    def get_security_group_rule(self, caller: Caller, rule_id: str
                                ) -> SecurityGroupRule:
        for rule in self.visible_security_group_rules(caller):
            if rule.id == rule_id:
                return rule
        raise exc.NeutronNotFound("SecurityGroupRule", rule_id)

    def _project_for(self, caller: Caller, body: dict) -> str:
        """Admins may create resources for another project."""
        requested = body.get("project_id") or body.get("tenant_id")
        if requested and requested != caller.project_id:
            if not caller.is_admin:
                raise exc.NeutronForbidden(
                    "Only admin can create resources for another project")
            return requested
        return caller.project_id

    # -- neutron: networks and subnets ------------------------------------------

    def create_network(self, caller: Caller, body: dict) -> Network:
        with self._lock:
            external = bool(body.get("router:external", False))
            if (external or body.get("shared")) and not caller.is_admin:
                raise exc.NeutronForbidden("Only admin can create shared or "
                                           "external networks")
            network = Network(new_id(), body.get("name", ""),
                              self._project_for(caller, body),
                              external=external,
                              shared=bool(body.get("shared", False)),
                              created_at=isotime(utcnow()),
                              description=body.get("description", ""))
            self.networks[network.id] = network
            return network

    def update_network(self, caller: Caller, network_id: str,
                       body: dict) -> Network:
        with self._lock:
            network = self.get_network(caller, network_id)
            if not self._owned(caller, network):
                raise exc.NeutronNotFound("Network", network_id)
            for key in ("name", "description"):
                if key in body:
                    setattr(network, key, body[key])
            return network

    def delete_network(self, caller: Caller, network_id: str) -> None:
        with self._lock:
            network = self.get_network(caller, network_id)
            if not self._owned(caller, network):
                raise exc.NeutronNotFound("Network", network_id)
            if any(p.network_id == network_id for p in self.ports.values()):
                raise exc.NeutronConflict(
                    f"Unable to complete operation on network {network_id}. "
                    f"There are one or more ports still in use on the "
                    f"network.", type="NetworkInUse")
            for subnet_id in list(network.subnet_ids):
                del self.subnets[subnet_id]
            del self.networks[network_id]

    def create_subnet(self, caller: Caller, body: dict) -> Subnet:
        with self._lock:
            network = self.get_network(caller, body.get("network_id", ""))
            if not self._owned(caller, network):
                raise exc.NeutronForbidden(
                    "Only the network owner can add subnets")
            try:
                cidr = ipaddress.ip_network(body.get("cidr", ""), strict=True)
            except ValueError as e:
                raise exc.NeutronBadRequest(f"Invalid input for cidr: {e}")
            version = int(body.get("ip_version", cidr.version))
            if version != cidr.version:
                raise exc.NeutronBadRequest("Invalid input: ip_version does "
                                            "not match the cidr")
            gateway = body.get("gateway_ip", str(next(cidr.hosts())))
            subnet = Subnet(new_id(), body.get("name", ""), network.id,
                            self._project_for(caller, body), str(cidr),
                            version, gateway,
                            list(body.get("dns_nameservers") or []),
                            enable_dhcp=bool(body.get("enable_dhcp", True)),
                            created_at=isotime(utcnow()),
                            description=body.get("description", ""))
            self.subnets[subnet.id] = subnet
            network.subnet_ids.append(subnet.id)
            return subnet

    def update_subnet(self, caller: Caller, subnet_id: str,
                      body: dict) -> Subnet:
        with self._lock:
            subnet = self.get_subnet(caller, subnet_id)
            for key in ("name", "description", "dns_nameservers",
                        "enable_dhcp"):
                if key in body:
                    setattr(subnet, key, body[key])
            return subnet

    def delete_subnet(self, caller: Caller, subnet_id: str) -> None:
        with self._lock:
            subnet = self.get_subnet(caller, subnet_id)
            if not self._owned(caller, subnet):
                raise exc.NeutronNotFound("Subnet", subnet_id)
            if any(ip["subnet_id"] == subnet_id
                   for p in self.ports.values() for ip in p.fixed_ips):
                raise exc.NeutronConflict(
                    f"Unable to complete operation on subnet {subnet_id}: "
                    f"One or more ports have an IP allocation from this "
                    f"subnet.", type="SubnetInUse")
            self.networks[subnet.network_id].subnet_ids.remove(subnet_id)
            del self.subnets[subnet_id]

    # -- neutron: ports ---------------------------------------------------------

    def _new_port(self, network: Network, project_id: str, *, name: str,
                  fixed_ip: str | None = None, subnet_id: str | None = None,
                  security_groups: list[str] | None = None,
                  device_id: str = "", device_owner: str = "",
                  description: str = "") -> Port:
        subnets = [self.subnets[s] for s in network.subnet_ids
                   if subnet_id in (None, s)]
        fixed_ips = []
        if subnets:
            subnet = subnets[0]
            if fixed_ip:
                if fixed_ip in subnet.used:
                    raise exc.NeutronConflict(
                        f"IP address {fixed_ip} already allocated in subnet "
                        f"{subnet.id}", type="IpAddressAlreadyAllocated")
                subnet.used.add(fixed_ip)
                address = fixed_ip
            else:
                address = subnet.allocate()
            fixed_ips.append({"subnet_id": subnet.id, "ip_address": address})
        mac = "fa:16:3e:" + ":".join(f"{self._rng.randrange(256):02x}"
                                     for _ in range(3))
        port = Port(new_id(), name, network.id, project_id, mac, fixed_ips,
                    device_id=device_id, device_owner=device_owner,
                    security_groups=list(security_groups or []),
                    created_at=isotime(utcnow()), description=description)
        self.ports[port.id] = port
        return port

    def create_port(self, caller: Caller, body: dict) -> Port:
        with self._lock:
            network = self.get_network(caller, body.get("network_id", ""))
            project_id = self._project_for(caller, body)
            self._ensure_default_security_group(project_id)
            fixed = (body.get("fixed_ips") or [{}])[0]
            groups = body.get("security_groups")
            if groups is None:
                groups = [self._default_security_group(project_id).id]
            return self._new_port(
                network, project_id, name=body.get("name", ""),
                fixed_ip=fixed.get("ip_address"),
                subnet_id=fixed.get("subnet_id"), security_groups=groups,
                device_id=body.get("device_id", ""),
                device_owner=body.get("device_owner", ""),
                description=body.get("description", ""))

    def update_port(self, caller: Caller, port_id: str, body: dict) -> Port:
        with self._lock:
            port = self.get_port(caller, port_id)
            for key in ("name", "description", "security_groups"):
                if key in body:
                    setattr(port, key, body[key])
            return port

    def delete_port(self, caller: Caller, port_id: str) -> None:
        with self._changes() as events:
            port = self.get_port(caller, port_id)
            if port.device_owner == ROUTER_INTERFACE:
                raise exc.NeutronConflict(
                    f"Port {port_id} cannot be deleted directly via the port "
                    f"API: has device owner {ROUTER_INTERFACE}.",
                    type="L3PortInUse")
            server = self.servers.get(port.device_id)
            self._delete_port(port)
            if server is not None:
                self._notify_changed(events, server)

    def _delete_port(self, port: Port) -> None:
        for fip in self.floatingips.values():
            if fip.port_id == port.id:
                fip.port_id = fip.fixed_ip_address = fip.router_id = None
        for ip in port.fixed_ips:
            subnet = self.subnets.get(ip["subnet_id"])
            if subnet is not None:
                subnet.used.discard(ip["ip_address"])
        del self.ports[port.id]

    # -- neutron: routers ---------------------------------------------------------

    def create_router(self, caller: Caller, body: dict) -> Router:
        with self._lock:
            router = Router(new_id(), body.get("name", ""),
                            self._project_for(caller, body),
                            created_at=isotime(utcnow()),
                            description=body.get("description", ""))
            self._set_gateway(caller, router,
                              body.get("external_gateway_info"))
            self.routers[router.id] = router
            return router

    def _set_gateway(self, caller: Caller, router: Router,
                     info: dict | None) -> None:
        for ip in router.gateway_ips:
            subnet = self.subnets.get(ip["subnet_id"])
            if subnet is not None:
                subnet.used.discard(ip["ip_address"])
        router.gateway_network_id, router.gateway_ips = None, []
        if not info or not info.get("network_id"):
            return
        network = self.get_network(caller, info["network_id"])
        if not network.external:
            raise exc.NeutronBadRequest(
                f"Network {network.id} is not a valid external network",
                type="BadRequest")
        subnet = self.subnets[network.subnet_ids[0]]
        router.gateway_network_id = network.id
        router.gateway_ips = [{"subnet_id": subnet.id,
                               "ip_address": subnet.allocate()}]
        router.enable_snat = bool(info.get("enable_snat", True))

    def update_router(self, caller: Caller, router_id: str,
                      body: dict) -> Router:
        with self._lock:
            router = self.get_router(caller, router_id)
            for key in ("name", "description"):
                if key in body:
                    setattr(router, key, body[key])
            if "external_gateway_info" in body:
                self._set_gateway(caller, router,
                                  body["external_gateway_info"])
            return router

    def delete_router(self, caller: Caller, router_id: str) -> None:
        with self._lock:
            router = self.get_router(caller, router_id)
            if any(p.device_id == router_id and
                   p.device_owner == ROUTER_INTERFACE
                   for p in self.ports.values()):
                raise exc.NeutronConflict(
                    f"Router {router_id} still has ports",
                    type="RouterInUse")
            if any(f.router_id == router_id for f in self.floatingips.values()):
                raise exc.NeutronConflict(
                    f"Router {router_id} still has floating IPs in use",
                    type="RouterInUse")
            self._set_gateway(caller, router, None)
            del self.routers[router_id]

    def add_router_interface(self, caller: Caller, router_id: str,
                             body: dict) -> tuple[Router, Port]:
        with self._lock:
            router = self.get_router(caller, router_id)
            if body.get("port_id"):
                port = self.get_port(caller, body["port_id"])
                if port.device_id:
                    raise exc.NeutronConflict(
                        f"Port {port.id} is in use", type="PortInUse")
            elif body.get("subnet_id"):
                subnet = self.get_subnet(caller, body["subnet_id"])
                if any(p.device_id == router_id and
                       ip["subnet_id"] == subnet.id
                       for p in self.ports.values() for ip in p.fixed_ips):
                    raise exc.NeutronBadRequest(
                        f"Router already has a port on subnet {subnet.id}")
                network = self.networks[subnet.network_id]
                # the interface port has an empty name so rally's cleanup
                # (which matches names) leaves it to remove_router_interface
                port = self._new_port(network, router.project_id, name="",
                                      fixed_ip=subnet.gateway_ip,
                                      subnet_id=subnet.id)
            else:
                raise exc.NeutronBadRequest(
                    "Either subnet_id or port_id must be specified")
            port.device_id = router.id
            port.device_owner = ROUTER_INTERFACE
            return router, port

    def remove_router_interface(self, caller: Caller, router_id: str,
                                body: dict) -> tuple[Router, Port]:
        with self._lock:
            router = self.get_router(caller, router_id)
            interfaces = [p for p in self.ports.values()
                          if p.device_id == router_id
                          and p.device_owner == ROUTER_INTERFACE]
            if body.get("port_id"):
                found = [p for p in interfaces if p.id == body["port_id"]]
            else:
                found = [p for p in interfaces for ip in p.fixed_ips
                         if ip["subnet_id"] == body.get("subnet_id")]
            if not found:
                raise exc.NeutronNotFound(
                    "RouterInterface",
                    body.get("port_id") or body.get("subnet_id") or "")
            port = found[0]
            subnet_ids = {ip["subnet_id"] for ip in port.fixed_ips}
            if any(f.router_id == router_id and f.port_id and any(
                    ip["subnet_id"] in subnet_ids
                    for ip in self.ports[f.port_id].fixed_ips)
                   for f in self.floatingips.values()):
                raise exc.NeutronConflict(
                    f"Router interface for subnet on router {router_id} "
                    f"cannot be deleted, as it is required by one or more "
                    f"floating IPs.", type="RouterInterfaceInUseByFloatingIP")
            self._delete_port(port)
            return router, port

    # -- neutron: floating IPs -------------------------------------------------------

    def create_floatingip(self, caller: Caller, body: dict) -> FloatingIP:
        with self._changes() as events:
            network = self.get_network(caller,
                                        body.get("floating_network_id", ""))
            if not network.external:
                raise exc.NeutronBadRequest(
                    f"Network {network.id} is not a valid external network")
            subnet = self.subnets[network.subnet_ids[0]]
            address = body.get("floating_ip_address")
            if address:
                if address in subnet.used:
                    raise exc.NeutronConflict(
                        f"IP address {address} already allocated",
                        type="IpAddressAlreadyAllocated")
                subnet.used.add(address)
            else:
                address = subnet.allocate()
            fip = FloatingIP(new_id(), self._project_for(caller, body),
                             network.id, address,
                             description=body.get("description", ""),
                             created_at=isotime(utcnow()))
            self.floatingips[fip.id] = fip
            if body.get("port_id"):
                self._associate(caller, events, fip, body["port_id"],
                                body.get("fixed_ip_address"))
            return fip

    def update_floatingip(self, caller: Caller, fip_id: str,
                          body: dict) -> FloatingIP:
        with self._changes() as events:
            fip = self.get_floatingip(caller, fip_id)
            if "description" in body:
                fip.description = body["description"]
            if "port_id" in body:
                self._disassociate(events, fip)
                if body["port_id"]:
                    self._associate(caller, events, fip, body["port_id"],
                                    body.get("fixed_ip_address"))
            return fip

    def delete_floatingip(self, caller: Caller, fip_id: str) -> None:
        with self._changes() as events:
            fip = self.get_floatingip(caller, fip_id)
            self._disassociate(events, fip)
            subnet = self.subnets[self.networks[fip.network_id].subnet_ids[0]]
            subnet.used.discard(fip.address)
            del self.floatingips[fip_id]

    def _associate(self, caller: Caller, events: list, fip: FloatingIP,
                   port_id: str, fixed_ip: str | None) -> None:
        port = self.get_port(caller, port_id)
        addresses = [ip["ip_address"] for ip in port.fixed_ips]
        if not addresses:
            raise exc.NeutronBadRequest(f"Port {port.id} does not have any "
                                        f"fixed IP address")
        if fixed_ip and fixed_ip not in addresses:
            raise exc.NeutronBadRequest(
                f"Port {port.id} does not have fixed ip {fixed_ip}")
        fixed_ip = fixed_ip or addresses[0]
        if any(f.port_id == port.id and f.fixed_ip_address == fixed_ip
               and f.id != fip.id for f in self.floatingips.values()):
            raise exc.NeutronConflict(
                f"Cannot associate floating IP {fip.address} with port "
                f"{port.id} using fixed IP {fixed_ip}, as that fixed IP "
                f"already has a floating IP.", type="FloatingIPPortAlreadyAssociated")
        router = self._router_towards(fip.network_id, port)
        if router is None:
            subnet_id = port.fixed_ips[0]["subnet_id"]
            raise exc.NeutronError(
                f"External network {fip.network_id} is not reachable from "
                f"subnet {subnet_id}.  Therefore, cannot associate Port "
                f"{port.id} with a Floating IP.", status=404,
                type="ExternalGatewayForFloatingIPNotFound")
        fip.port_id, fip.fixed_ip_address, fip.router_id = (
            port.id, fixed_ip, router.id)
        server = self.servers.get(port.device_id)
        if server is not None:
            self._notify_changed(events, server)

    def _disassociate(self, events: list, fip: FloatingIP) -> None:
        port = self.ports.get(fip.port_id or "")
        fip.port_id = fip.fixed_ip_address = fip.router_id = None
        server = self.servers.get(port.device_id) if port else None
        if server is not None:
            self._notify_changed(events, server)

    def _router_towards(self, external_id: str, port: Port) -> Router | None:
        """A router with a gateway on the external network and an interface
        on one of the port's subnets, as neutron requires."""
        subnet_ids = {ip["subnet_id"] for ip in port.fixed_ips}
        for router in self.routers.values():
            if router.gateway_network_id != external_id:
                continue
            for candidate in self.ports.values():
                if (candidate.device_id == router.id
                        and candidate.device_owner == ROUTER_INTERFACE
                        and subnet_ids & {ip["subnet_id"]
                                          for ip in candidate.fixed_ips}):
                    return router
        return None

    # -- neutron: security groups ----------------------------------------------------

    def _default_security_group(self, project_id: str) -> SecurityGroup:
        return next(g for g in self.security_groups.values()
                    if g.project_id == project_id and g.name == "default")

    def _ensure_default_security_group(self, project_id: str) -> None:
        """Neutron creates a project's ``default`` group on first use."""
        with self._lock:
            if any(g.project_id == project_id and g.name == "default"
                   for g in self.security_groups.values()):
                return
            group = self._new_security_group(project_id, "default",
                                             "Default security group")
            for ethertype in ("IPv4", "IPv6"):
                group.rules.append(SecurityGroupRule(
                    new_id(), group.id, project_id, "ingress", ethertype,
                    remote_group_id=group.id, created_at=group.created_at))

    def _new_security_group(self, project_id: str, name: str,
                            description: str) -> SecurityGroup:
        group = SecurityGroup(new_id(), name, project_id, description,
                              created_at=isotime(utcnow()))
        # every new group allows all egress, as in neutron
        for ethertype in ("IPv4", "IPv6"):
            group.rules.append(SecurityGroupRule(
                new_id(), group.id, project_id, "egress", ethertype,
                created_at=group.created_at))
        self.security_groups[group.id] = group
        return group

    def _resolve_security_group(self, caller: Caller, name_or_id: str) -> str:
        for group in self.security_groups.values():
            if group.project_id == caller.project_id and name_or_id in (
                    group.id, group.name):
                return group.id
        raise exc.NovaBadRequest(f"Security group {name_or_id} not found "
                                 f"for project {caller.project_id}.")

    def create_security_group(self, caller: Caller,
                              body: dict) -> SecurityGroup:
        with self._lock:
            project_id = self._project_for(caller, body)
            self._ensure_default_security_group(project_id)
            if body.get("name") == "default":
                raise exc.NeutronConflict(
                    "Default security group already exists.",
                    type="SecurityGroupDefaultAlreadyExists")
            return self._new_security_group(project_id, body.get("name", ""),
                                            body.get("description", ""))

    def update_security_group(self, caller: Caller, sg_id: str,
                              body: dict) -> SecurityGroup:
        with self._lock:
            group = self.get_security_group(caller, sg_id)
            for key in ("name", "description"):
                if key in body:
                    setattr(group, key, body[key])
            return group

    def delete_security_group(self, caller: Caller, sg_id: str) -> None:
        with self._lock:
            group = self.get_security_group(caller, sg_id)
            if group.name == "default" and not caller.is_admin:
                raise exc.NeutronConflict(
                    "Insufficient rights for removing default security "
                    "group.", type="SecurityGroupCannotRemoveDefault")
            if any(sg_id in p.security_groups for p in self.ports.values()):
                raise exc.NeutronConflict(
                    f"Security Group {sg_id} in use.",
                    type="SecurityGroupInUse")
            del self.security_groups[sg_id]

    def create_security_group_rule(self, caller: Caller,
                                   body: dict) -> SecurityGroupRule:
        with self._lock:
            group = self.get_security_group(
                caller, body.get("security_group_id", ""))
            direction = body.get("direction")
            if direction not in ("ingress", "egress"):
                raise exc.NeutronBadRequest(
                    f"Invalid input for direction: {direction!r}")
            ethertype = body.get("ethertype", "IPv4")
            if ethertype not in ("IPv4", "IPv6"):
                raise exc.NeutronBadRequest(
                    f"Invalid input for ethertype: {ethertype!r}")
            prefix = body.get("remote_ip_prefix")
            rule = SecurityGroupRule(
                new_id(), group.id, group.project_id, direction, ethertype,
                protocol=body.get("protocol"),
                port_range_min=body.get("port_range_min"),
                port_range_max=body.get("port_range_max"),
                remote_ip_prefix=prefix,
                remote_group_id=body.get("remote_group_id"),
                description=body.get("description", ""),
                created_at=isotime(utcnow()))
            if any(r.key() == rule.key() for r in group.rules):
                raise exc.NeutronConflict(
                    "Security group rule already exists.",
                    type="SecurityGroupRuleExists")
            group.rules.append(rule)
            return rule

    def delete_security_group_rule(self, caller: Caller, rule_id: str) -> None:
        with self._lock:
            rule = self.get_security_group_rule(caller, rule_id)
            self.security_groups[rule.security_group_id].rules.remove(rule)

    # -- misc -----------------------------------------------------------------------

    def host_id(self, server: Server) -> str:
        """Nova's opaque per-project host id."""
        return hashlib.sha224(
            (server.project_id + server.host).encode()).hexdigest()

    def user_name(self, user_id: str) -> str:
        user = self.users.get(user_id)
        return user.name if user else user_id
