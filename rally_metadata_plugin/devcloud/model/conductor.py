"""What nova-conductor checks before a live migration starts.

:func:`schedule` picks the destination the way nova's live-migration task
does: the scheduler (enabled and up hosts other than the source) unless the
request forces a named host, which then only has to be up and not the
source. :func:`storage_check` is the libvirt driver's shared-storage check:
on local disks (:attr:`.DevCloudConfig.local_disks`) a non-block migration
is refused, and ``block_migration: "auto"`` means block.

A failed check is a :class:`~.actions.Failure`; the caller decides whether
the API answers it at once (below microversion 2.34) or records it on the
migration (from 2.34 nova checks after answering 202).
"""

from __future__ import annotations

from typing import Callable

from rally_metadata_plugin.devcloud.model.actions import Failure
from rally_metadata_plugin.devcloud.model.services import Host

NOT_ENOUGH_HOSTS = "There are not enough hosts available."
SHARED_STORAGE_REQUIRED = ("Shared storage live-migration requires either "
                           "shared storage or boot-from-volume with no local "
                           "disks.")


def no_valid_host(reason: str = NOT_ENOUGH_HOSTS) -> Failure:
    return Failure("NoValidHost", f"No valid host was found. {reason}")


def schedule(server_id: str, source: str, hosts: list[Host],
             requested: str | None, force: bool,
             choose: Callable[[list[str]], str]
             ) -> tuple[str | None, Failure | None]:
    """The destination, or why there is none (when the scheduler finds no
    host, nova's record has no destination either).

    :param hosts: every compute host
    :param requested: the host named in the request, if any (it exists)
    :param force: whether a named host bypasses the scheduler
    :param choose: picks among the scheduler's candidates
    """
    if requested is not None and force:
        host = next(h for h in hosts if h.name == requested)
        if requested == source:
            return requested, Failure(
                "UnableToMigrateToSelf",
                f"Unable to migrate instance ({server_id}) to current host "
                f"({source}).")
        if host.service.state != "up":
            return requested, Failure(
                "ComputeServiceUnavailable",
                f"Compute service of {requested} is unavailable at this "
                f"time.")
        return requested, None
    candidates = [h.name for h in hosts
                  if h.service.usable and h.name != source
                  and requested in (None, h.name)]
    if not candidates:
        return None, no_valid_host()
    return choose(candidates), None


def resolve_block_migration(requested: bool | None, local_disks: bool
                            ) -> bool:
    """``None`` is ``"auto"``: block migration exactly when there is no
    shared storage."""
    return local_disks if requested is None else requested


def storage_check(source: str, block_migration: bool,
                  local_disks: bool) -> Failure | None:
    """The libvirt driver's check on the source host."""
    if local_disks and not block_migration:
        return Failure("InvalidSharedStorage",
                       f"{source} is not on shared storage: "
                       f"{SHARED_STORAGE_REQUIRED}")
    return None
