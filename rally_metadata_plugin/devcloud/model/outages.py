"""What the metadata service serves a server while it moves: its identity,
or the outage a live migration scheduled on the destination.

:class:`MetadataOutages` is the part of
:class:`~.migrations.LiveMigrationBackend` the metadata service asks
(:meth:`~MetadataOutages.instance_identity`, the outages it schedules);
:class:`MetadataReplica` is the metadata server process's copy of that,
which answers what a request gets. All instants are on the devcloud's
``CLOCK_BOOTTIME`` (:mod:`..boottime`).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.services import AVAILABILITY_ZONE
from rally_metadata_plugin.devcloud.profiles import OutagePlan

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend

DHCP_DOMAIN = "novalocal"


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
    kind: FaultKind
    start: float
    end: float | None
    decoy: InstanceIdentity | None = None

    def covers(self, at: float) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclasses.dataclass(frozen=True)
class MetadataView:
    """What a metadata request arriving at some instant gets."""

    host: str
    outage: Outage | None
    identity: InstanceIdentity


class MetadataOutages:
    """Outages by server, and the metadata view (the lock is the cloud's)."""

    _cloud: CloudBackend
    outages: dict[str, list[Outage]]

    def schedule_outage(self, server: Server, migration_id: str,
                        plan: OutagePlan, switched_at: float) -> Outage:
        """The destination's outage, ``plan.delay`` after the switchover."""
        start = switched_at + plan.delay
        end = None if plan.duration is None else start + plan.duration
        decoy = (self._decoy(server)
                 if plan.kind == FaultKind.WRONG_INSTANCE else None)
        scheduled = Outage(server.id, migration_id, server.host, plan.kind,
                           start, end, decoy)
        self.outages.setdefault(server.id, []).append(scheduled)
        self._cloud.outage_added(scheduled)
        return scheduled

    def forget_server(self, server_id: str) -> None:
        """Compute deleted the server: its outages go with it."""
        with self._cloud.lock:
            self.outages.pop(server_id, None)

    # -- what the metadata service serves -------------------------------------

    def instance_identity(self, server: Server) -> InstanceIdentity:
        """The server's own metadata: names, keys and addresses."""
        cloud = self._cloud
        with cloud.lock:
            return InstanceIdentity(
                uuid=server.id, name=server.name,
                hostname=f"{server.hostname}.{DHCP_DOMAIN}",
                project_id=server.project_id,
                launch_index=server.launch_index,
                availability_zone=AVAILABILITY_ZONE,
                public_keys=cloud.compute.public_keys(server),
                fixed_ips=cloud.server_ports.fixed_ips(server.id),
                floating_ips=tuple(cloud.l3.server_floating_ips(server.id)),
                ec2_id=f"i-{server.seq:08x}")

    def _decoy(self, server: Server) -> InstanceIdentity:
        """Another instance's identity: a real neighbour if there is one."""
        others = [s for s in self._cloud.compute.all_servers()
                  if s.id != server.id]
        if others:
            return self.instance_identity(others[0])
        ghost = str(uuid.UUID(int=self._cloud.rng.getrandbits(128), version=4))
        return dataclasses.replace(
            self.instance_identity(server), uuid=ghost, name="ghost",
            hostname=f"ghost.{DHCP_DOMAIN}", ec2_id="i-ffffffff")


class MetadataReplica:
    """What the metadata server process knows of the model: each server's
    host and identity, and its outages, as the devcloud sent them (see
    :mod:`...metadata`); it answers what a request arriving at some instant
    gets. Pure: the server process owns it, from its event loop."""

    def __init__(self) -> None:
        self._servers: dict[str, tuple[str, InstanceIdentity]] = {}
        self._outages: dict[str, list[Outage]] = {}

    def server_changed(self, server_id: str, host: str,
                       identity: InstanceIdentity) -> None:
        self._servers[server_id] = (host, identity)

    def server_deleted(self, server_id: str) -> None:
        self._servers.pop(server_id, None)
        self._outages.pop(server_id, None)

    def outage_added(self, outage: Outage) -> None:
        self._outages.setdefault(outage.server_id, []).append(outage)

    def view(self, server_id: str, at: float) -> MetadataView | None:
        """What the service of the server's current host answers to a
        request arriving at ``at`` (None: the server is gone, or unknown)."""
        served = self._servers.get(server_id)
        if served is None:
            return None
        host, identity = served
        active = [o for o in self._outages.get(server_id, []) if o.covers(at)]
        outage = max(active, key=lambda o: o.start) if active else None
        return MetadataView(host, outage, identity)

    def refused_at(self, server_id: str, at: float, host: str | None = None) -> bool:
        """Whether a ``refused`` outage of the server covers ``at`` (on
        ``host``'s service only, when given)."""
        return any(o.kind == FaultKind.REFUSED and o.covers(at)
                   and (host is None or o.host == host)
                   for o in self._outages.get(server_id, []))
