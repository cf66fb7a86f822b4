"""Nova's instance actions: what was asked of a server, and how it went.

An action is recorded per API request that changes a server (here:
``live-migration`` for ``os-migrateLive``, ``live_migration_cancel`` for an
abort), keyed by the request's id (the ``x-openstack-request-id`` of the
response). The services that carry it out record *events* in it
(``conductor_live_migrate_instance``, ``compute_live_migration``...), each
with a result; a failed event keeps nova's user-facing message
(``details``, shown from microversion 2.84) and a traceback whose last line
names the exception (admins only). An action with a failed event has the
message ``Error``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model.common import isotime, utcnow
from rally_metadata_plugin.devcloud.model.identity import Caller

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend

#: where a failure's traceback says nova raised each exception
_RAISED_IN = {
    "conductor": ("nova/conductor/manager.py", "_live_migrate",
                  "task.execute()"),
    "compute": ("nova/compute/manager.py", "_do_live_migration",
                "self.driver.live_migration(context, instance, dest,"),
}


@dataclasses.dataclass(frozen=True)
class Failure:
    """An exception nova raised: its class name and formatted message."""

    exception: str
    message: str

    def traceback(self, service: str) -> str:
        """A traceback as nova stores it for the event (admins see it)."""
        path, function, line = _RAISED_IN.get(service, _RAISED_IN["compute"])
        return ("Traceback (most recent call last):\n"
                f'  File "/usr/lib/python3/dist-packages/{path}", line 1, '
                f"in {function}\n    {line}\n"
                f"nova.exception.{self.exception}: {self.message}\n")


@dataclasses.dataclass
class ActionEvent:
    event: str
    host: str
    start_time: str
    finish_time: str | None = None
    result: str | None = None
    traceback: str | None = None
    details: str | None = None


@dataclasses.dataclass
class InstanceAction:
    request_id: str
    action: str
    instance_uuid: str
    user_id: str
    project_id: str
    start_time: str
    updated_at: str
    seq: int
    message: str | None = None
    events: list[ActionEvent] = dataclasses.field(default_factory=list)


class ActionBackend:
    """Instance actions by server (the lock is the cloud's)."""

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self.actions: dict[str, list[InstanceAction]] = {}

    def start_action(self, caller: Caller, server_id: str, request_id: str,
                     action: str) -> InstanceAction:
        with self._cloud.lock:
            now = isotime(utcnow())
            actions = self.actions.setdefault(server_id, [])
            record = InstanceAction(request_id, action, server_id,
                                    caller.user_id, caller.project_id, now,
                                    now, len(actions) + 1)
            actions.append(record)
            return record

    def start_event(self, action: InstanceAction, event: str,
                    host: str) -> ActionEvent:
        with self._cloud.lock:
            now = isotime(utcnow())
            record = ActionEvent(event, host, now)
            action.events.append(record)
            action.updated_at = now
            return record

    def finish_event(self, action: InstanceAction, event: ActionEvent,
                     failure: Failure | None = None,
                     service: str = "compute") -> None:
        with self._cloud.lock:
            now = isotime(utcnow())
            event.finish_time = now
            action.updated_at = now
            if failure is None:
                event.result = "Success"
                return
            event.result = "Error"
            event.details = failure.message
            event.traceback = failure.traceback(service)
            action.message = "Error"

    def record_event(self, action: InstanceAction, event: str, host: str,
                     failure: Failure | None = None,
                     service: str = "compute") -> ActionEvent:
        """An event that started and finished at once."""
        record = self.start_event(action, event, host)
        self.finish_event(action, record, failure, service)
        return record

    # -- reading --------------------------------------------------------------

    def list_actions(self, caller: Caller, server_id: str, *,
                     marker: str | None = None,
                     limit: int | None = None) -> list[InstanceAction]:
        """Newest first, as nova lists them."""
        with self._cloud.lock:
            self._cloud.compute.get_server(caller, server_id)
            actions = sorted(self.actions.get(server_id, []),
                             key=lambda a: a.seq, reverse=True)
            if marker is not None:
                ids = [a.request_id for a in actions]
                if marker not in ids:
                    raise exc.NovaBadRequest(f"Marker {marker} could not be "
                                             f"found.")
                actions = actions[ids.index(marker) + 1:]
            return actions[:limit] if limit is not None else actions

    def get_action(self, caller: Caller, server_id: str,
                   request_id: str) -> InstanceAction:
        with self._cloud.lock:
            self._cloud.compute.get_server(caller, server_id)
            for action in self.actions.get(server_id, []):
                if action.request_id == request_id:
                    return action
            raise exc.ActionNotFound(request_id)
