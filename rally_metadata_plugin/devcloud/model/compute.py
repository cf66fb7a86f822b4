"""Nova's part of the model (and glance's images): flavors, images,
keypairs, servers and server groups.

A server is placed on the least loaded host the scheduler may use (enabled
and up, :mod:`.services`), boots after
``config.boot_seconds`` (BUILD -> ACTIVE, on the cloud's timer thread) and
gets a ``compute:nova`` port on each requested network (:mod:`.network`).
Live migration, and what the metadata service tells an instance, are in
:mod:`.migrations`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import TYPE_CHECKING

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud import keys
from rally_metadata_plugin.devcloud.model.common import (isotime, new_id,
                                                         utcnow)
from rally_metadata_plugin.devcloud.model.identity import Caller
from rally_metadata_plugin.devcloud.model.security_groups import DEFAULT_GROUP
from rally_metadata_plugin.devcloud.model.services import Host

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend
    from rally_metadata_plugin.devcloud.model.migrations import Fault
    from rally_metadata_plugin.devcloud.model.server_ports import (
        NetworkRequest)


def sanitize_hostname(name: str) -> str:
    """Nova's rule for turning a display name into a hostname."""
    host = re.sub(r"[ _]", "-", name.lower())
    host = re.sub(r"[^\w.-]+", "", host, flags=re.ASCII)
    host = host.strip(".-")[:63]
    return host or "server"


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
    fault: Fault | None = None
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

    def touch(self) -> None:
        """Stamp ``updated_at``: something nova shows has changed."""
        self.updated_at = isotime(utcnow())

    def set_state(self, status: str, task_state: str | None) -> None:
        self.status, self.task_state = status, task_state
        self.touch()


@dataclasses.dataclass
class ServerGroup:
    id: str
    name: str
    policies: list[str]
    project_id: str
    user_id: str
    members: list[str] = dataclasses.field(default_factory=list)


class ComputeBackend:
    """Hosts, flavors, images, keypairs, servers and server groups."""

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self._seq = itertools.count(1)
        self.flavors: dict[str, Flavor] = {}
        self.images: dict[str, Image] = {}
        self.keypairs: dict[tuple[str, str], Keypair] = {}
        self.servers: dict[str, Server] = {}
        self.server_groups: dict[str, ServerGroup] = {}

    def seed(self, image_owner: str, now: str) -> None:
        """The flavors rally's tasks name and one small ``cirros`` image."""
        for flavor in (Flavor("1", "m1.tiny", 512, 1, 1),
                       Flavor("2", "m1.small", 2048, 20, 1),
                       Flavor("42", "m1.nano", 128, 1, 1)):
            self.flavors[flavor.id] = flavor
        image = Image(new_id(), "cirros", size=16 * 1024 * 1024,
                      owner=image_owner, created_at=now)
        self.images[image.id] = image

    # -- flavors, images, hosts -----------------------------------------------

    def list_flavors(self) -> list[Flavor]:
        """Smallest (RAM) first."""
        with self._cloud.lock:
            return sorted(self.flavors.values(), key=lambda f: f.ram)

    def find_flavor(self, flavor_id: str) -> Flavor | None:
        with self._cloud.lock:
            return self.flavors.get(str(flavor_id))

    def get_flavor(self, flavor_id: str) -> Flavor:
        flavor = self.find_flavor(flavor_id)
        if flavor is None:
            raise exc.FlavorNotFound(flavor_id)
        return flavor

    def list_images(self) -> list[Image]:
        """Newest first, as glance lists them."""
        with self._cloud.lock:
            return sorted(self.images.values(),
                          key=lambda i: (i.created_at, i.id), reverse=True)

    def get_image(self, image_id: str) -> Image:
        with self._cloud.lock:
            image = self.images.get(image_id)
            if image is None:
                raise exc.ImageNotFound(image_id)
            return image

    def list_hosts(self) -> list[Host]:
        return self._cloud.services.list_hosts()

    def get_host(self, name: str) -> Host | None:
        return self._cloud.services.get_host(name)

    def running_vms(self, host: Host) -> int:
        with self._cloud.lock:
            return sum(1 for s in self.servers.values() if s.host == host.name)

    # -- keypairs -------------------------------------------------------------

    def list_keypairs(self, caller: Caller) -> list[Keypair]:
        with self._cloud.lock:
            return sorted((k for (uid, _), k in self.keypairs.items()
                           if uid == caller.user_id), key=lambda k: k.name)

    def get_keypair(self, caller: Caller, name: str) -> Keypair:
        with self._cloud.lock:
            keypair = self.keypairs.get((caller.user_id, name))
            if keypair is None:
                raise exc.KeypairNotFound(name, caller.user_id)
            return keypair

    def create_keypair(self, caller: Caller, name: str,
                       public_key: str | None, key_type: str = "ssh"
                       ) -> tuple[Keypair, str | None]:
        """Import ``public_key`` or generate a pair.

        :returns: the keypair and the private key (only when generated).
        """
        if not re.fullmatch(r"[\w .@-]{1,255}", name):
            raise exc.InvalidKeypair("Keypair name contains unsafe "
                                     "characters")
        private = None
        if public_key is None:
            private, public_key = keys.generate_rsa_keypair()
        try:
            fingerprint = keys.fingerprint(public_key)
        except ValueError as e:
            raise exc.InvalidKeypair(str(e))
        with self._cloud.lock:
            if (caller.user_id, name) in self.keypairs:
                raise exc.KeypairExists(name)
            keypair = Keypair(name, caller.user_id, public_key.strip(),
                              fingerprint, key_type, isotime(utcnow()))
            self.keypairs[(caller.user_id, name)] = keypair
            return keypair, private

    def delete_keypair(self, caller: Caller, name: str) -> None:
        with self._cloud.lock:
            self.get_keypair(caller, name)
            del self.keypairs[(caller.user_id, name)]

    # -- servers --------------------------------------------------------------

    def _visible_server(self, caller: Caller, server_id: str) -> Server:
        server = self.servers.get(server_id)
        if server is None or not (caller.is_admin or
                                  server.project_id == caller.project_id):
            raise exc.ServerNotFound(server_id)
        return server

    def get_server(self, caller: Caller, server_id: str) -> Server:
        with self._cloud.lock:
            return self._visible_server(caller, server_id)

    def find_server(self, server_id: str) -> Server | None:
        """Unscoped lookup, for the adapters and the other services."""
        with self._cloud.lock:
            return self.servers.get(server_id)

    def all_servers(self) -> list[Server]:
        """Every server, in creation order."""
        with self._cloud.lock:
            return sorted(self.servers.values(), key=lambda s: s.seq)

    def list_servers(self, caller: Caller, *, all_tenants: bool = False,
                     marker: str | None = None, limit: int | None = None,
                     name: str | None = None, status: str | None = None
                     ) -> list[Server]:
        """Nova's default order (newest first) with marker paging."""
        with self._cloud.lock:
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
                      networks: list[NetworkRequest] | str | None,
                      security_groups: list[str], count: int = 1,
                      metadata: dict | None = None) -> list[Server]:
        """Boot ``count`` servers; each gets ports on the given networks.

        ``networks`` is a list of requests, ``"auto"``/``"none"``, or None
        (every network of the project).
        """
        cloud = self._cloud
        with cloud.changes():
            if image_id not in self.images:
                raise exc.NovaBadRequest(f"Image {image_id} could not be "
                                         f"found.")
            if str(flavor_id) not in self.flavors:
                raise exc.NovaBadRequest(f"Flavor {flavor_id} could not be "
                                         f"found.")
            if key_name is not None and (
                    caller.user_id, key_name) not in self.keypairs:
                raise exc.NovaBadRequest("Invalid key_name provided.")
            cloud.security.ensure_default_group(caller.project_id)
            groups = [cloud.security.group_for_server(caller, name_or_id)
                      for name_or_id in security_groups or [DEFAULT_GROUP]]
            requested = cloud.server_ports.check_requests(caller, networks)
            created = []
            for index in range(count):
                display = name if count == 1 else f"{name}-{index + 1}"
                now = isotime(utcnow())
                server = Server(
                    id=new_id(), name=display, seq=next(self._seq),
                    project_id=caller.project_id, user_id=caller.user_id,
                    image_id=image_id, flavor_id=str(flavor_id),
                    key_name=key_name,
                    security_groups=[g.name for g in groups],
                    host=self._place(), created_at=now, updated_at=now,
                    hostname=sanitize_hostname(display), launch_index=index,
                    metadata=dict(metadata or {}))
                self.servers[server.id] = server
                for request in requested:
                    cloud.server_ports.plug(server, request,
                                            [g.id for g in groups])
                created.append(server)
                cloud.server_changed(server)
                cloud.timers.call_later(
                    cloud.config.boot_seconds,
                    lambda sid=server.id: self._finish_boot(sid))
            return created

    def _place(self) -> str:
        """Least loaded usable host, lowest index first: deterministic."""
        hosts = self._cloud.services.usable_hosts()
        if not hosts:
            raise exc.NoValidHost("There are not enough hosts available.")
        load = {h.name: 0 for h in hosts}
        for server in self.servers.values():
            load[server.host] = load.get(server.host, 0) + 1
        return min(hosts, key=lambda h: (load[h.name], h.int_id)).name

    def _finish_boot(self, server_id: str) -> None:
        with self._cloud.changes():
            server = self.servers.get(server_id)
            if server is None or server.status != "BUILD":
                return
            server.set_state("ACTIVE", None)
            server.launched_at = server.updated_at
            self._cloud.server_changed(server)

    def delete_server(self, caller: Caller, server_id: str) -> None:
        """Delete at once: its ports go (:meth:`.ServerPorts.unplug`), its
        metadata outages too (:meth:`.LiveMigrationBackend.forget_server`)."""
        cloud = self._cloud
        with cloud.changes():
            server = self._visible_server(caller, server_id)
            del self.servers[server_id]
            cloud.server_ports.unplug(server_id)
            for group in self.server_groups.values():
                if server_id in group.members:
                    group.members.remove(server_id)
            cloud.migrations.forget_server(server_id)
            cloud.server_deleted(server)

    def console_output(self, caller: Caller, server_id: str) -> str:
        with self._cloud.lock:
            server = self._visible_server(caller, server_id)
            return (f"devcloud guest {server.hostname} on {server.host}\n"
                    f"{server.hostname} login: \n")

    def public_keys(self, server: Server) -> dict[str, str]:
        """The server's keypair as ``{name: public key}`` (empty when it
        has none, or it was deleted since)."""
        with self._cloud.lock:
            keypair = self.keypairs.get((server.user_id,
                                         server.key_name or ""))
            return {keypair.name: keypair.public_key} if keypair else {}

    # -- server groups --------------------------------------------------------

    def list_server_groups(self, caller: Caller) -> list[ServerGroup]:
        with self._cloud.lock:
            return [g for g in self.server_groups.values()
                    if g.project_id == caller.project_id]

    def groups_of(self, server_id: str) -> list[str]:
        """Ids of the server groups the server is a member of."""
        with self._cloud.lock:
            return [g.id for g in self.server_groups.values() if server_id in g.members]

    def create_server_group(self, caller: Caller, name: str,
                            policies: list[str]) -> ServerGroup:
        with self._cloud.lock:
            group = ServerGroup(new_id(), name, policies, caller.project_id,
                                caller.user_id)
            self.server_groups[group.id] = group
            return group

    def get_server_group(self, caller: Caller, group_id: str) -> ServerGroup:
        with self._cloud.lock:
            group = self.server_groups.get(group_id)
            if group is None or (group.project_id != caller.project_id
                                 and not caller.is_admin):
                raise exc.ServerGroupNotFound(group_id)
            return group

    def delete_server_group(self, caller: Caller, group_id: str) -> None:
        with self._cloud.lock:
            self.get_server_group(caller, group_id)
            del self.server_groups[group_id]
