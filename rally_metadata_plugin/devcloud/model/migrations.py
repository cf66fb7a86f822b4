"""Live migration, and what the metadata service serves during it.

A migration is validated and recorded here, then driven by a
:class:`Migrator` (the devcloud's engine, :mod:`..migration`, where the
fault model lives) that reports back: :meth:`~LiveMigrationBackend.switch_over`
(the guest runs on the destination; the destination's metadata outage, if
any, is scheduled), then :meth:`~LiveMigrationBackend.complete_migration` or
:meth:`~LiveMigrationBackend.fail_migration`. The metadata service asks
:meth:`~LiveMigrationBackend.metadata_view` what a request arriving at some
instant gets: the server's identity, or the outage covering that instant.
All instants are on the devcloud's ``CLOCK_BOOTTIME`` (:mod:`..boottime`).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Protocol

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model.common import new_id
from rally_metadata_plugin.devcloud.model.compute import (AVAILABILITY_ZONE,
                                                          Server)
from rally_metadata_plugin.devcloud.model.identity import Caller
from rally_metadata_plugin.devcloud.profiles import OutagePlan

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend

DHCP_DOMAIN = "novalocal"


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
class Fault:
    """Why a server is in ERROR (nova's instance fault): here, a failed
    live migration."""

    message: str
    code: int
    created: str


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


class Migrator(Protocol):
    """Runs live migrations (the fault model lives behind this)."""

    def choose_destination(self, server: Server,
                           candidates: list[str]) -> str:
        """Pick the destination host among ``candidates``."""

    def start(self, migration: Migration) -> None:
        """Drive the migration asynchronously; report back to the backend."""


class LiveMigrationBackend:
    """Migration records and metadata outages (the lock is the cloud's).

    :attr:`migrator` is plugged in by the devcloud; without one, live
    migration is refused.
    """

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self.migrator: Migrator | None = None
        self.migrations: dict[str, Migration] = {}
        self.outages: dict[str, list[Outage]] = {}

    def live_migrate(self, caller: Caller, server_id: str,
                     host: str | None) -> Migration:
        """Validate and start a live migration (admin only, like nova's
        default policy)."""
        compute = self._cloud.compute
        with self._cloud.changes():
            if not caller.is_admin:
                raise exc.NovaForbidden(
                    "Policy doesn't allow os_compute_api:os-migrate-server:"
                    "migrate_live to be performed.")
            server = compute.get_server(caller, server_id)
            if server.status != "ACTIVE":
                raise exc.InstanceInvalidState(
                    server.id, server.vm_state if server.status != "MIGRATING"
                    else "active (task_state migrating)", "os-migrateLive")
            if host is not None:
                if compute.get_host(host) is None:
                    raise exc.NovaBadRequest(f"Compute host {host} could not "
                                             f"be found.")
                if host == server.host:
                    raise exc.NovaBadRequest(
                        f"Unable to migrate instance ({server.id}) to "
                        f"current host ({host}).")
                destination = host
            else:
                candidates = [h.name for h in compute.list_hosts()
                              if h.name != server.host]
                if not candidates or self.migrator is None:
                    raise exc.NoValidHost()
                destination = self.migrator.choose_destination(server,
                                                               candidates)
            if self.migrator is None:
                raise exc.NovaBadRequest("Live migration is not available.")
            server.migrations += 1
            migration = Migration(new_id(), server.id, server.migrations,
                                  server.host, destination, boottime.now())
            self.migrations[migration.id] = migration
            server.set_state("MIGRATING", "migrating")
            self._cloud.server_changed(server)
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
        with self._cloud.changes():
            server = self._cloud.compute.find_server(migration.server_id)
            if server is None:
                migration.status = "aborted"
                return None
            now = boottime.now()
            server.host = migration.destination
            server.touch()
            self._cloud.server_ports.move(server.id, server.host)
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
                self._cloud.outage_added(scheduled)
            self._cloud.server_changed(server)
            return scheduled

    def complete_migration(self, migration: Migration) -> bool:
        """Post-migration: ACTIVE on the destination (False: server gone)."""
        with self._cloud.changes():
            server = self._cloud.compute.find_server(migration.server_id)
            if server is None:
                migration.status = "aborted"
                return False
            server.set_state("ACTIVE", None)
            migration.status = "completed"
            self._cloud.server_changed(server)
            return True

    def fail_migration(self, migration: Migration, message: str,
                       code: int) -> bool:
        """The migration failed: the server stays on the source, in ERROR."""
        with self._cloud.changes():
            server = self._cloud.compute.find_server(migration.server_id)
            migration.status = "error" if server else "aborted"
            if server is None:
                return False
            server.set_state("ERROR", None)
            server.fault = Fault(message, code, server.updated_at)
            self._cloud.server_changed(server)
            return True

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

    def metadata_view(self, server_id: str, at: float) -> MetadataView | None:
        """What the metadata service of the server's current host answers
        to a request arriving at ``at`` (None: the server is gone)."""
        with self._cloud.lock:
            server = self._cloud.compute.find_server(server_id)
            if server is None:
                return None
            active = [o for o in self.outages.get(server_id, [])
                      if o.covers(at)]
            outage = max(active, key=lambda o: o.start) if active else None
            return MetadataView(server.host, outage,
                                self.instance_identity(server))

    def refused_at(self, server_id: str, at: float) -> bool:
        """Whether a ``refused`` outage of the server covers ``at``."""
        with self._cloud.lock:
            return any(o.kind == FaultKind.REFUSED and o.covers(at)
                       for o in self.outages.get(server_id, []))
