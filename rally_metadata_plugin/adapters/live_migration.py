"""Drive one live migration through nova's API with the admin client.

The request takes the form the client's microversion accepts:

* below 2.25: ``block_migration`` is a boolean and ``disk_over_commit`` is
  required (``"auto"`` does not exist yet and means ``False`` here);
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

Without a named host the scheduler picks the destination at every microversion.

A migration is done when the server is ACTIVE on a host other than the one
it left (under load nova can show ACTIVE before the host changes).  ERROR
fails with nova's fault; a server that went MIGRATING and is ACTIVE on its
old host again was rolled back.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence, Union

HOST_ATTRIBUTE = "OS-EXT-SRV-ATTR:host"
#: First microversion without ``disk_over_commit`` and with ``"auto"``.
AUTO_BLOCK_MIGRATION_VERSION = (2, 25)
#: Polls that must see a MIGRATING server back on its source host to call it a rollback.
ROLLBACK_CONFIRMATIONS = 3

BlockMigration = Union[bool, str]


class MigrationError(Exception):
    """A live migration failed; the message says why and what to check."""


class MigrationTimeout(MigrationError):
    pass


def microversion(client: Any) -> tuple[float, float]:
    """``(major, minor)`` of a novaclient client; ``2.0`` when unknown."""
    version = getattr(client, "api_version", None)
    major = getattr(version, "ver_major", 2) or 2
    minor = getattr(version, "ver_minor", 0) or 0
    return (major, minor)


def live_migrate_kwargs(
    version: tuple[float, float], block_migration: BlockMigration, host: Optional[str]
) -> dict[str, Any]:
    """Keyword arguments for ``Server.live_migrate`` at ``version``."""
    if tuple(version) < AUTO_BLOCK_MIGRATION_VERSION:
        return {
            "host": host,
            "block_migration": block_migration is True,
            "disk_over_commit": False,
        }
    return {"host": host, "block_migration": block_migration}


def fault_message(server: Any) -> str:
    fault = getattr(server, "fault", None)
    if isinstance(fault, dict):
        message = fault.get("message") or ""
        details = fault.get("details") or ""
        code = fault.get("code")
        text = message + (f" ({details.strip().splitlines()[-1]})" if details.strip() else "")
        return f"{text} [code {code}]" if code else text or "no fault recorded"
    return str(fault) if fault else "no fault recorded"


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
    """Live migrations of one server through an admin novaclient client."""

    def __init__(
        self,
        admin_nova: Any,
        *,
        timeout: float = 400.0,
        poll_interval: float = 2.0,
        prepoll_delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._nova = admin_nova
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.prepoll_delay = prepoll_delay
        self._clock = clock
        self._sleep = sleep

    @property
    def version(self) -> tuple[float, float]:
        return microversion(self._nova)

    def require_hypervisors(self, minimum: int = 2) -> int:
        count = len(self._nova.hypervisors.list())
        if count < minimum:
            raise MigrationError(
                f"Live migration needs at least {minimum} compute hosts (hypervisors); "
                f"nova lists {count}."
            )
        return count

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
        server.live_migrate(**live_migrate_kwargs(self.version, block_migration, host))

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
            elif status == "ACTIVE" and seen_migrating:
                back_on_source += 1
                if back_on_source >= ROLLBACK_CONFIRMATIONS:
                    raise MigrationError(
                        f"The live migration of server {server_id} was rolled back: it is "
                        f"ACTIVE on its source host {source_host} again (see nova-compute logs "
                        f"and 'openstack server migration list --server {server_id}')."
                    )
            if self._clock() >= deadline:
                raise MigrationTimeout(
                    f"Server {server_id} was not ACTIVE on a host other than {source_host} "
                    f"within {self.timeout:g} s (last seen: {status} on {host}); raise "
                    f"[openstack] nova_server_live_migrate_timeout if migrations are slow."
                )
            self._sleep(self.poll_interval)
