"""Drive one live migration through nova's API with the admin client.

Which microversion the migration calls use
    rally-openstack builds the nova client at the microversion the environment
    pins (``api_info: {nova: {version: ...}}``), else at 2.0.  At 2.0
    ``block_migration: "auto"`` cannot be said (it needs 2.25) and nova would
    take it as ``false``: shared storage, which a cloud with local disks
    refuses.  So when nothing is pinned, the migration calls use the highest
    microversion both nova and novaclient support, as openstackclient does;
    a pinned version is respected, and ``"auto"`` with a pin below 2.25 is an
    error that says what to set (:func:`choose_version`).

The request takes the form that microversion accepts:

* below 2.25: ``block_migration`` is a boolean and ``disk_over_commit`` is
  required;
* from 2.25: ``disk_over_commit`` is gone and ``block_migration`` may be
  ``"auto"``;
* ``force`` (2.30-2.67) is never sent.

What a named target host (``target_hosts``) means depends on the microversion
too, because of ``force``:

* below 2.30 nova has no ``force`` and a named host always bypasses the
  scheduler: its filters (availability zones, server groups, aggregates...)
  are not applied; nova-conductor only checks that the host is up, is not the
  source, has room and runs a compatible hypervisor;
* from 2.30 to 2.67 ``force`` defaults to false, so the scheduler validates the
  named host (a host its filters reject fails the migration: NoValidHost);
* from 2.68 ``force`` is gone and the scheduler always validates it.

Without a named host the scheduler picks the destination at every microversion.  With
no pinned version the calls run at the negotiated (highest) one, so a named host is
validated by the scheduler.

A migration is done when the server is ACTIVE on a host other than the one
it left (under load nova can show ACTIVE before the host changes).  ERROR
fails with nova's fault.  From 2.34 nova answers the request before it has
checked anything, and a failed pre-check (NoValidHost,
MigrationPreCheckError) leaves the server ACTIVE on its source, possibly
before a poll ever sees MIGRATING: the migration record (``GET
/os-migrations?instance_uuid=``) tells, in status ``error`` or ``failed``,
and the instance action of the request carries nova's reason.  A migration
still running at the timeout is aborted (2.24+) before the caller deletes
the server.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence, Union

HOST_ATTRIBUTE = "OS-EXT-SRV-ATTR:host"

Version = tuple[int, int]

#: What rally-openstack uses when the environment pins no nova microversion.
UNPINNED: Version = (2, 0)
#: First microversion without ``disk_over_commit`` and with ``"auto"``.
AUTO_BLOCK_MIGRATION_VERSION: Version = (2, 25)
#: First microversion listing a server's in-progress migrations.
SERVER_MIGRATIONS_VERSION: Version = (2, 23)
#: First microversion that can abort a running live migration.
ABORT_VERSION: Version = (2, 24)
#: Polls that must see a MIGRATING server back on its source host to call it a rollback.
ROLLBACK_CONFIRMATIONS = 3
#: Migration record statuses of a migration that failed.
FAILED_STATUSES = ("error", "failed")
#: ... and of one that is still going on.
RUNNING_STATUSES = ("queued", "preparing", "running", "accepted", "pre-migrating",
                    "migrating", "post-migrating")

BlockMigration = Union[bool, str]


class MigrationError(Exception):
    """A live migration failed; the message says why and what to check."""


class MigrationTimeout(MigrationError):
    pass


def parse_version(text: Any) -> Version:
    """``"2.79"`` -> ``(2, 79)``."""
    major, _, minor = str(text).partition(".")
    return (int(major), int(minor or 0))


def format_version(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def microversion(client: Any) -> Version:
    """``(major, minor)`` of a novaclient client; ``2.0`` when unknown."""
    version = getattr(client, "api_version", None)
    major = getattr(version, "ver_major", None)
    minor = getattr(version, "ver_minor", None)
    if not (isinstance(major, int) and isinstance(minor, int)) or major == 0:
        return UNPINNED
    return (major, minor)


def choose_version(configured: Version, highest_common: Optional[Version],
                   block_migration: BlockMigration) -> Version:
    """The microversion for the migration calls (see the module docstring).

    :param configured: the admin client's microversion
    :param highest_common: the highest one nova and novaclient both support,
        or None if nova does not do microversions
    :raises MigrationError: ``"auto"`` cannot be sent at the version allowed
    """
    if configured != UNPINNED:
        if block_migration == "auto" and configured < AUTO_BLOCK_MIGRATION_VERSION:
            raise MigrationError(
                f"block_migration \"auto\" needs nova microversion 2.25 or later, but the "
                f"environment pins {format_version(configured)} (api_info: nova: version); "
                f"set block_migration to true (instances on local disks) or false (shared "
                f"storage or boot from volume), or pin 2.25 or later.")
        return configured
    chosen = highest_common or UNPINNED
    if block_migration == "auto" and chosen < AUTO_BLOCK_MIGRATION_VERSION:
        raise MigrationError(
            f"block_migration \"auto\" needs nova microversion 2.25 or later, but this cloud "
            f"supports up to {format_version(chosen)}; set block_migration to true "
            f"(instances on local disks) or false (shared storage or boot from volume).")
    return chosen


def live_migrate_kwargs(
    version: Version, block_migration: BlockMigration, host: Optional[str]
) -> dict[str, Any]:
    """Keyword arguments for ``Server.live_migrate`` at ``version``."""
    if tuple(version) < AUTO_BLOCK_MIGRATION_VERSION:
        return {
            "host": host,
            "block_migration": block_migration is True,
            "disk_over_commit": False,
        }
    return {"host": host, "block_migration": block_migration}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def fault_message(server: Any) -> str:
    fault = getattr(server, "fault", None)
    if isinstance(fault, dict):
        message = fault.get("message") or ""
        details = _last_line(fault.get("details") or "")
        code = fault.get("code")
        text = message + (f" ({details})" if details else "")
        return f"{text} [code {code}]" if code else text or "no fault recorded"
    return str(fault) if fault else "no fault recorded"


def action_failure(action: Any) -> str:
    """Nova's reason from an instance action's failed events, or ''."""
    reasons = []
    for event in getattr(action, "events", None) or ():
        event = event if isinstance(event, dict) else getattr(event, "_info", {})
        if str(event.get("result", "")).lower() != "error":
            continue
        # ``details`` (2.84+) is the user-facing message; the traceback's last
        # line names the exception (admin only).
        reason = event.get("details") or _last_line(event.get("traceback") or "")
        reasons.append(f"{event.get('event', 'event')}: {reason or 'Error'}")
    return "; ".join(reasons)


def pick_target(
    target_hosts: Optional[Sequence[str]], current_host: str, index: int
) -> Optional[str]:
    """The requested target for migration number ``index`` (1-based), or None (scheduler).

    Rotates through ``target_hosts`` skipping the host the server is on.
    """
    if not target_hosts:
        return None
    candidates = [h for h in target_hosts if h != current_host]
    if not candidates:
        raise MigrationError(
            f"Every host in target_hosts ({', '.join(target_hosts)}) is the host the server "
            f"is already on ({current_host}); list at least one other compute host."
        )
    return candidates[(index - 1) % len(candidates)]


class LiveMigrator:
    """Live migrations of one server at a time through an admin novaclient client.

    :param admin_nova: the admin novaclient client as configured
    :param client_at: builds an admin client at a given microversion string;
        without it the configured client is used as it is
    """

    def __init__(
        self,
        admin_nova: Any,
        *,
        client_at: Optional[Callable[[str], Any]] = None,
        timeout: float = 400.0,
        poll_interval: float = 2.0,
        prepoll_delay: float = 1.0,
        abort_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._nova = admin_nova
        self._client_at = client_at
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.prepoll_delay = prepoll_delay
        self.abort_timeout = abort_timeout
        self._clock = clock
        self._sleep = sleep
        # The migration requested last: records that existed before it, and its request id.
        self._known_migrations: Optional[set] = None
        self._request_id: Optional[str] = None

    @property
    def version(self) -> Version:
        return microversion(self._nova)

    def negotiate(self, block_migration: BlockMigration) -> Version:
        """Switch to the microversion the migration calls need; returns it.

        Call once before migrating.  Raises :class:`MigrationError` when
        ``block_migration`` cannot be expressed (see :func:`choose_version`).
        """
        configured = self.version
        highest = None
        if configured == UNPINNED and self._client_at is not None:
            highest = self._highest_common_version()
        chosen = choose_version(configured, highest, block_migration)
        if chosen != configured and self._client_at is not None:
            self._nova = self._client_at(format_version(chosen))
        return chosen

    def _highest_common_version(self) -> Optional[Version]:
        from novaclient import api_versions

        try:
            found = api_versions.discover_version(self._nova,
                                                  api_versions.APIVersion("2.latest"))
        except Exception as e:
            raise MigrationError(
                f"Could not ask nova which microversions it supports: {e}; pin one with "
                f"api_info: {{nova: {{version: \"2.25\"}}}} in the environment spec.") from e
        version = (found.ver_major, found.ver_minor)
        return None if version == UNPINNED else version

    def require_hypervisors(self, minimum: int = 2) -> int:
        """Check that at least ``minimum`` compute services can take a migration.

        Counts nova-compute services that are enabled and up: a disabled or
        down host is listed as a hypervisor but no migration will land there.
        """
        services = list(self._nova.services.list(binary="nova-compute"))
        usable = [s for s in services
                  if getattr(s, "status", "") == "enabled" and getattr(s, "state", "") == "up"]
        if len(usable) < minimum:
            others = ", ".join(f"{getattr(s, 'host', '?')} ({getattr(s, 'status', '?')}, "
                               f"{getattr(s, 'state', '?')})" for s in services if s not in usable)
            raise MigrationError(
                f"Live migration needs at least {minimum} compute hosts that are enabled and "
                f"up; nova lists {len(usable)} of {len(services)} nova-compute services as "
                f"such" + (f" (not usable: {others})" if others else "") + ".")
        return len(usable)

    def host_of(self, server_id: str) -> str:
        server = self._nova.servers.get(server_id)
        host = getattr(server, HOST_ATTRIBUTE, None)
        if not host:
            raise MigrationError(
                f"Nova does not show the host of server {server_id} "
                f"({HOST_ATTRIBUTE}); the admin credential must have the admin role."
            )
        return host

    def request(
        self, server_id: str, block_migration: BlockMigration = "auto", host: Optional[str] = None
    ) -> None:
        server = self._nova.servers.get(server_id)
        self._known_migrations = {getattr(m, "id", None) for m in self._migrations(server_id)}
        result = server.live_migrate(**live_migrate_kwargs(self.version, block_migration, host))
        request_ids = getattr(result, "request_ids", None) or [None]
        self._request_id = request_ids[0]

    def wait_for_host_change(self, server_id: str, source_host: str, started: float) -> str:
        """Poll until ACTIVE on another host; returns that host."""
        deadline = started + self.timeout
        seen_migrating = False
        back_on_source = 0
        status = host = None
        self._sleep(self.prepoll_delay)
        while True:
            server = self._nova.servers.get(server_id)
            status = getattr(server, "status", None)
            host = getattr(server, HOST_ATTRIBUTE, None)
            if status == "ERROR":
                raise MigrationError(
                    f"Server {server_id} went to ERROR during live migration from "
                    f"{source_host}: {fault_message(server)}"
                )
            if status == "ACTIVE" and host and host != source_host:
                return host
            if status == "MIGRATING":
                seen_migrating, back_on_source = True, 0
            elif status == "ACTIVE":
                self._raise_if_failed(server_id, source_host)
                if seen_migrating:
                    back_on_source += 1
                    if back_on_source >= ROLLBACK_CONFIRMATIONS:
                        raise MigrationError(
                            f"The live migration of server {server_id} was rolled back: it is "
                            f"ACTIVE on its source host {source_host} again (see nova-compute "
                            f"logs and 'openstack server migration list --server "
                            f"{server_id}').")
            if self._clock() >= deadline:
                aborted = self._abort(server_id) if status == "MIGRATING" else ""
                raise MigrationTimeout(
                    f"Server {server_id} was not ACTIVE on a host other than {source_host} "
                    f"within {self.timeout:g} s (last seen: {status} on {host}); raise "
                    f"[openstack] nova_server_live_migrate_timeout if migrations are slow."
                    + (f" {aborted}" if aborted else "")
                )
            self._sleep(self.poll_interval)

    # -- migration records --------------------------------------------------

    def _migrations(self, server_id: str) -> list:
        """Nova's migration records of the server (newest last), [] if unreadable."""
        try:
            records = list(self._nova.migrations.list(instance_uuid=server_id))
        except Exception:
            return []
        live = [m for m in records
                if getattr(m, "migration_type", "live-migration") == "live-migration"]
        return sorted(live, key=lambda m: getattr(m, "id", 0) or 0)

    def _ours(self, server_id: str) -> Optional[Any]:
        """The record of the migration requested last, once nova created it."""
        if self._known_migrations is None:
            return None
        new = [m for m in self._migrations(server_id)
               if getattr(m, "id", None) not in self._known_migrations]
        return new[-1] if new else None

    def _raise_if_failed(self, server_id: str, source_host: str) -> None:
        record = self._ours(server_id)
        if record is None or getattr(record, "status", "") not in FAILED_STATUSES:
            return
        reason = self._reason(server_id).rstrip(". ") or (
            "nova recorded no reason; see nova-conductor and nova-compute logs")
        raise MigrationError(
            f"Nova rejected the live migration of server {server_id} from {source_host} "
            f"(migration {getattr(record, 'id', '?')}: {record.status}): {reason}. The server "
            f"stays ACTIVE on {source_host}; check target_hosts, block_migration and that the "
            f"compute hosts can reach each other.")

    def _reason(self, server_id: str) -> str:
        if not self._request_id:
            return ""
        try:
            action = self._nova.instance_action.get(server_id, self._request_id)
        except Exception:
            return ""
        return action_failure(action)

    def _abort(self, server_id: str) -> str:
        """Abort the migration still running; a sentence on what happened."""
        if self.version < ABORT_VERSION:
            return (f"The migration could not be aborted (nova microversion "
                    f"{format_version(self.version)} < 2.24); it may still be running.")
        try:
            running = [m for m in self._nova.server_migrations.list(server_id)
                       if getattr(m, "status", "") in RUNNING_STATUSES]
            if not running:
                return "No running migration was left to abort."
            migration = running[-1]
            self._nova.server_migrations.live_migration_abort(server_id, migration.id)
        except Exception as e:
            return f"Aborting the migration failed: {e}."
        deadline = self._clock() + self.abort_timeout
        while self._clock() < deadline:
            self._sleep(self.poll_interval)
            status = getattr(self._nova.servers.get(server_id), "status", None)
            if status != "MIGRATING":
                return f"The migration {migration.id} was aborted (server now {status})."
        return (f"The migration {migration.id} was asked to abort but the server was still "
                f"MIGRATING {self.abort_timeout:g} s later.")
