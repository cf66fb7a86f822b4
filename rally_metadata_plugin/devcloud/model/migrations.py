"""Live migration: nova's migration records, and what the metadata service
serves while a server moves.

A migration is validated and recorded here (nova-api and nova-conductor's
part: :mod:`.conductor` has the pre-checks), then driven by a
:class:`Migrator` (the devcloud's engine, :mod:`..migration_engine`, where
the fault model lives) that reports back through this backend, which keeps
the record's status as nova does: ``accepted`` (pre-checks), ``queued``,
``preparing``, ``running``, ``post-migrating`` (switched over), then
``completed``; or ``error`` (a failed pre-check or migration) or
``cancelled`` (aborted).

:meth:`~LiveMigrationBackend.switch_over` moves the guest to the destination
(and schedules the destination's metadata outage, if any, which the
metadata service hears of as :meth:`~.backend.CloudListener.outage_added`).
All instants are on the devcloud's ``CLOCK_BOOTTIME``
(:mod:`..boottime`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING, Protocol

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model import conductor
from rally_metadata_plugin.devcloud.model.actions import (ActionEvent,
                                                          Failure,
                                                          InstanceAction)
from rally_metadata_plugin.devcloud.model.common import (isotime, new_id,
                                                         utcnow)
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.identity import Caller
from rally_metadata_plugin.devcloud.model.outages import (MetadataOutages,
                                                          Outage)
from rally_metadata_plugin.devcloud.model.services import CONTROLLER
from rally_metadata_plugin.devcloud.profiles import OutagePlan

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend

LIVE_MIGRATION = "live-migration"
#: statuses of a live migration nova calls in progress
IN_PROGRESS = ("queued", "preparing", "running", "post-migrating")


@dataclasses.dataclass
class Migration:
    """A live migration and nova's record of it."""

    id: int                       # nova's integer id
    uuid: str
    server_id: str
    index: int                    # 1-based, per server
    source: str
    destination: str | None       # None: the scheduler found none
    requested_at: float
    block_migration: bool
    user_id: str
    project_id: str
    flavor_id: str
    created_at: str
    action: InstanceAction
    updated_at: str | None = None
    status: str = "accepted"
    #: the abort request's action and its pending event
    cancel: tuple[InstanceAction, ActionEvent] | None = None
    #: the ``compute_live_migration`` event, once the migration runs
    running_event: ActionEvent | None = None
    migration_type: str = LIVE_MIGRATION

    def set_status(self, status: str) -> None:
        self.status = status
        self.updated_at = isotime(utcnow())

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS


@dataclasses.dataclass(frozen=True)
class Fault:
    """Why a server is in ERROR (nova's instance fault): here, a failed
    live migration."""

    message: str
    code: int
    created: str


class Migrator(Protocol):
    """Runs live migrations (the fault model lives behind this)."""

    def choose_destination(self, server: Server,
                           candidates: list[str]) -> str:
        """Pick the destination host among ``candidates``."""

    def precheck_failure(self, migration: Migration) -> Failure | None:
        """The pre-check failure the fault model draws for it, if any."""

    def start(self, migration: Migration,
              failure: Failure | None = None) -> None:
        """Drive the migration asynchronously; report back to the backend.

        A migration still ``accepted`` has its pre-checks ahead: they fail
        with ``failure``, if given."""

    def abort(self, migration: Migration) -> None:
        """Stop a migration in progress; it reports back as cancelled."""


class LiveMigrationBackend(MetadataOutages):
    """Migration records and metadata outages (the lock is the cloud's).

    :attr:`migrator` is plugged in by the devcloud; without one, live
    migration is refused.
    """

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self._ids = itertools.count(1)
        self.migrator: Migrator | None = None
        self.migrations: dict[int, Migration] = {}
        self.outages: dict[str, list[Outage]] = {}

    def live_migrate(self, caller: Caller, server_id: str, host: str | None,
                     *, request_id: str, block_migration: bool | None = None,
                     force: bool = True, async_checks: bool = True
                     ) -> Migration:
        """Validate, record and start a live migration (admin only, like
        nova's default policy).

        :param block_migration: None for ``"auto"``
        :param force: a named ``host`` bypasses the scheduler (below 2.30,
            or ``force: true`` up to 2.67)
        :param async_checks: pre-checks run after the API answered (2.34+);
            otherwise a failed one is raised here (the API's 400)
        """
        cloud = self._cloud
        with cloud.changes():
            server = self._check_request(caller, server_id, host)
            migrator = self.migrator
            action = cloud.actions.start_action(caller, server.id, request_id,
                                                LIVE_MIGRATION)
            block = conductor.resolve_block_migration(
                block_migration, cloud.config.local_disks)
            destination, failure = conductor.schedule(
                server.id, server.host, cloud.services.list_hosts(), host,
                force, lambda hosts: migrator.choose_destination(server, hosts))
            server.migrations += 1
            migration = Migration(
                next(self._ids), new_id(), server.id, server.migrations,
                server.host, destination, boottime.now(), block,
                caller.user_id, caller.project_id, server.flavor_id,
                isotime(utcnow()), action)
            self.migrations[migration.id] = migration
            failure = (failure
                       or conductor.storage_check(server.host, block,
                                                  cloud.config.local_disks)
                       or migrator.precheck_failure(migration))
            if failure is not None and failure.exception == "NoValidHost":
                migration.destination = None
            server.set_state("MIGRATING", "migrating")
            cloud.server_changed(server)
            if not async_checks:
                event = "conductor_migrate_server"
                if failure is not None:
                    self._fail_checks(migration, event, failure)
                    raise exc.NovaBadRequest(failure.message)
                self._pass_checks(migration, event)
        migrator.start(migration, failure)
        return migration

    def _check_request(self, caller: Caller, server_id: str,
                       host: str | None) -> Server:
        compute = self._cloud.compute
        if not caller.is_admin:
            raise exc.NovaForbidden(
                "Policy doesn't allow os_compute_api:os-migrate-server:"
                "migrate_live to be performed.")
        server = compute.get_server(caller, server_id)
        if server.status != "ACTIVE" or server.task_state is not None:
            raise exc.InstanceInvalidState(
                server.id, server.vm_state if server.status != "MIGRATING"
                else "active (task_state migrating)", "os-migrateLive")
        if host is not None and compute.get_host(host) is None:
            raise exc.NovaBadRequest(f"Compute host {host} could not be "
                                     f"found.")
        if self.migrator is None:
            raise exc.NovaBadRequest("Live migration is not available.")
        return server

    # -- reported by the migrator ---------------------------------------------

    def _conductor_event(self, migration: Migration,
                         event: str) -> ActionEvent:
        return self._cloud.actions.start_event(migration.action, event,
                                               CONTROLLER)

    def _pass_checks(self, migration: Migration, event: str) -> None:
        actions = self._cloud.actions
        record = self._conductor_event(migration, event)
        actions.record_event(migration.action,
                             "compute_check_can_live_migrate_destination",
                             migration.destination or "")
        actions.record_event(migration.action,
                             "compute_check_can_live_migrate_source",
                             migration.source)
        actions.finish_event(migration.action, record)
        migration.set_status("queued")

    def _fail_checks(self, migration: Migration, event: str,
                     failure: Failure) -> None:
        record = self._conductor_event(migration, event)
        self._cloud.actions.finish_event(migration.action, record, failure,
                                         service="conductor")
        migration.set_status("error")
        server = self._cloud.compute.find_server(migration.server_id)
        if server is not None:
            # nova-conductor resets the task state; the server stays ACTIVE
            server.set_state("ACTIVE", None)
            self._cloud.server_changed(server)

    def checks_done(self, migration: Migration,
                    failure: Failure | None) -> bool:
        """The asynchronous pre-checks (2.34+) ended; False: failed."""
        with self._cloud.changes():
            event = "conductor_live_migrate_instance"
            if failure is not None:
                self._fail_checks(migration, event, failure)
                return False
            self._pass_checks(migration, event)
            return True

    def advance(self, migration: Migration, status: str) -> bool:
        """``preparing`` (pre_live_migration on the destination), then
        ``running``; False if the server is gone."""
        with self._cloud.changes():
            server = self._cloud.compute.find_server(migration.server_id)
            if server is None:
                migration.set_status("error")
                return False
            actions = self._cloud.actions
            if status == "preparing":
                actions.record_event(migration.action,
                                     "compute_pre_live_migration",
                                     migration.destination or "")
            elif status == "running":
                migration.running_event = actions.start_event(
                    migration.action, "compute_live_migration",
                    migration.source)
            migration.set_status(status)
            return True

    def _finish_running(self, migration: Migration,
                        failure: Failure | None = None) -> None:
        if migration.running_event is not None:
            self._cloud.actions.finish_event(
                migration.action, migration.running_event, failure)

    def cancel_migration(self, migration: Migration) -> bool:
        """The abort took effect: ACTIVE on the source again, no outage."""
        with self._cloud.changes():
            migration.set_status("cancelled")
            self._finish_running(migration)
            if migration.cancel is not None:
                self._cloud.actions.finish_event(*migration.cancel)
            server = self._cloud.compute.find_server(migration.server_id)
            if server is None:
                return False
            server.set_state("ACTIVE", None)
            self._cloud.server_changed(server)
            return True

    def abort_migration(self, caller: Caller, server_id: str,
                        migration_id: int, request_id: str,
                        allow_queued: bool) -> Migration:
        """``DELETE /servers/{id}/migrations/{mid}``: ask the migrator to
        stop it (2.24+: ``running`` only; 2.65+: also queued/preparing)."""
        cloud = self._cloud
        with cloud.changes():
            _require_admin(caller, "servers:migrations:delete")
            server = cloud.compute.get_server(caller, server_id)
            if server.task_state != "migrating":
                raise exc.NovaConflict(
                    f"Cannot 'abort live migration' instance {server.id} "
                    f"while it is in task_state {server.task_state}")
            migration = self._of_server(server.id, migration_id)
            allowed = ("running",) + (("queued", "preparing")
                                      if allow_queued else ())
            if migration.status not in allowed:
                raise exc.InvalidMigrationState(
                    migration_id, server.id, migration.status,
                    "abort live migration")
            action = cloud.actions.start_action(caller, server.id, request_id,
                                                "live_migration_cancel")
            migration.cancel = (action, cloud.actions.start_event(
                action, "compute_live_migration_abort", migration.source))
            migrator = self.migrator
        migrator.abort(migration)
        return migration

    def switch_over(self, migration: Migration,
                    outage: OutagePlan | None) -> Outage | None:
        """The guest now runs on the destination: switch the host and
        schedule the destination's metadata outage (the status stays
        MIGRATING until :meth:`complete_migration`; the migration's is
        ``post-migrating``).

        :returns: the scheduled outage, or None (no outage, or the server
            was deleted meanwhile).
        """
        with self._cloud.changes():
            server = self._cloud.compute.find_server(migration.server_id)
            if server is None:
                migration.set_status("error")
                return None
            now = boottime.now()
            server.host = migration.destination
            server.touch()
            self._cloud.server_ports.move(server.id, server.host)
            migration.set_status("post-migrating")
            scheduled = (None if outage is None else
                         self.schedule_outage(server, migration.uuid, outage,
                                              now))
            self._cloud.server_changed(server)
            return scheduled

    def complete_migration(self, migration: Migration) -> bool:
        """Post-migration: ACTIVE on the destination (False: server gone)."""
        with self._cloud.changes():
            server = self._cloud.compute.find_server(migration.server_id)
            self._finish_running(migration)
            if server is None:
                migration.set_status("error")
                return False
            self._cloud.actions.record_event(
                migration.action, "compute_post_live_migration_at_destination",
                server.host)
            server.set_state("ACTIVE", None)
            migration.set_status("completed")
            self._cloud.server_changed(server)
            return True

    def fail_migration(self, migration: Migration, message: str, code: int,
                       exception: str = "MigrationError") -> bool:
        """The migration failed: the server stays on the source, in ERROR."""
        with self._cloud.changes():
            server = self._cloud.compute.find_server(migration.server_id)
            self._finish_running(migration, Failure(exception, message))
            migration.set_status("error")
            if server is None:
                return False
            server.set_state("ERROR", None)
            server.fault = Fault(message, code, server.updated_at)
            self._cloud.server_changed(server)
            return True

    # -- migration records ----------------------------------------------------

    def list_migrations(self, caller: Caller, *,
                        instance_uuid: str | None = None,
                        status: str | None = None, host: str | None = None,
                        migration_type: str | None = None,
                        source_compute: str | None = None,
                        user_id: str | None = None,
                        project_id: str | None = None) -> list[Migration]:
        """``GET /os-migrations`` (admin): oldest first; ``host`` is the
        source or the destination."""
        _require_admin(caller, "os-migrations:index")
        with self._cloud.lock:
            return [m for m in sorted(self.migrations.values(),
                                      key=lambda m: m.id)
                    if instance_uuid in (None, m.server_id)
                    and status in (None, m.status)
                    and host in (None, m.source, m.destination)
                    and migration_type in (None, m.migration_type)
                    and source_compute in (None, m.source)
                    and user_id in (None, m.user_id)
                    and project_id in (None, m.project_id)]

    def in_progress(self, caller: Caller, server_id: str) -> list[Migration]:
        """The server's live migrations in progress (admin)."""
        _require_admin(caller, "servers:migrations:index")
        with self._cloud.lock:
            server = self._cloud.compute.get_server(caller, server_id)
            return [m for m in sorted(self.migrations.values(),
                                      key=lambda m: m.id)
                    if m.server_id == server.id and m.in_progress]

    def get_in_progress(self, caller: Caller, server_id: str,
                        migration_id: int) -> Migration:
        _require_admin(caller, "servers:migrations:show")
        with self._cloud.lock:
            server = self._cloud.compute.get_server(caller, server_id)
            try:
                migration = self._of_server(server.id, migration_id)
            except exc.MigrationNotFoundForInstance:
                raise exc.NovaNotFound(
                    f"In-progress live migration {migration_id} is not found "
                    f"for server {server.id}.")
            if not migration.in_progress:
                raise exc.NovaNotFound(
                    f"Live migration {migration_id} for server {server.id} "
                    f"is not in progress.")
            return migration

    def _of_server(self, server_id: str, migration_id: int) -> Migration:
        migration = self.migrations.get(migration_id)
        if migration is None or migration.server_id != server_id:
            raise exc.MigrationNotFoundForInstance(migration_id, server_id)
        return migration



def _require_admin(caller: Caller, policy: str) -> None:
    if not caller.is_admin:
        raise exc.NovaForbidden(f"Policy doesn't allow os_compute_api:"
                                f"{policy} to be performed.")
