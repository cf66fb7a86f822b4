"""Nova's migration records, instance actions and services, per microversion.

* ``GET /os-migrations`` (admin; filters ``instance_uuid``, ``status``,
  ``host``, ``migration_type``, ``source_compute``, and ``user_id`` /
  ``project_id`` from 2.80): 2.23 adds ``migration_type`` and, for a live
  migration in progress, ``links``; 2.59 adds ``uuid``, newest-first order
  and ``limit``/``marker`` paging; 2.80 adds ``user_id``/``project_id``.
* ``GET /servers/{id}/migrations[/{mid}]`` (2.23+): live migrations in
  progress; ``DELETE`` (2.24+) aborts one (``running``; also ``queued`` and
  ``preparing`` from 2.65).
* ``GET /servers/{id}/os-instance-actions[/{request_id}]``: events for
  admins only below 2.51, for everyone from 2.51 (``traceback`` admins
  only); ``updated_at`` from 2.58, ``hostId`` (and ``host`` for admins)
  from 2.62, ``details`` (admins) from 2.84.
* ``GET /os-services`` (admin; filters ``binary``, ``host``): integer ids
  below 2.53, UUIDs from 2.53, ``forced_down`` from 2.11;
  ``PUT /os-services/{uuid}`` from 2.53, ``PUT /os-services/{action}``
  (``enable``, ``disable``, ``disable-log-reason``, ``force-down`` from
  2.11) below.
"""

from __future__ import annotations

import urllib.parse
import uuid

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.api import nova
from rally_metadata_plugin.devcloud.api.base import (Call, empty_response,
                                                     json_response)
from rally_metadata_plugin.devcloud.model.actions import (ActionEvent,
                                                          InstanceAction)
from rally_metadata_plugin.devcloud.model.common import isotime, utcnow
from rally_metadata_plugin.devcloud.model.migrations import Migration
from rally_metadata_plugin.devcloud.model.services import Service

SERVICE = nova.SERVICE
P = nova.P


def _limit_marker(call: Call) -> tuple[int | None, str | None]:
    return nova._int_arg(call, "limit"), call.request.args.get("marker")


def _page(items: list, key, marker: str | None,
          limit: int | None) -> list:
    """Items after ``marker`` (by ``key``), at most ``limit``."""
    if marker is not None:
        keys = [key(item) for item in items]
        if marker not in keys:
            raise exc.NovaBadRequest(f"Marker {marker} could not be found.")
        items = items[keys.index(marker) + 1:]
    return items[:limit] if limit is not None else items


def _next_link(call: Call, path: str, limit: int | None, items: list,
               marker: str) -> list[dict]:
    if not limit or len(items) < limit:
        return []
    query = urllib.parse.urlencode({"limit": limit, "marker": marker})
    return [{"rel": "next",
             "href": f"{call.base_url}/compute/v2.1/{path}?{query}"}]


def _migration_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise exc.NovaBadRequest(f"Invalid input for field/attribute id. "
                                 f"Value: {value}. '{value}' is not a "
                                 f"'integer'")


# -- os-migrations ------------------------------------------------------------

def _migration_hosts(migration: Migration) -> dict:
    return {"source_compute": migration.source,
            "source_node": migration.source,
            "dest_compute": migration.destination,
            "dest_node": migration.destination}


def _migration_view(call: Call, migration: Migration) -> dict:
    flavor = int(migration.flavor_id) if migration.flavor_id.isdigit() else None
    view = {"id": migration.id, "status": migration.status,
            "instance_uuid": migration.server_id, "dest_host": None,
            "old_instance_type_id": flavor, "new_instance_type_id": flavor,
            "created_at": migration.created_at,
            "updated_at": migration.updated_at,
            **_migration_hosts(migration)}
    if call.mv_at_least(2, 23):
        view["migration_type"] = migration.migration_type
        if migration.in_progress:
            view["links"] = nova._links(
                call, f"servers/{migration.server_id}/migrations",
                str(migration.id))
    _extend(call, view, migration)
    return view


def _extend(call: Call, view: dict, migration: Migration) -> None:
    if call.mv_at_least(2, 59):
        view["uuid"] = migration.uuid
    if call.mv_at_least(2, 80):
        view.update(user_id=migration.user_id,
                    project_id=migration.project_id)


def list_migrations(call: Call):
    args = call.request.args
    filters = {name: args.get(name) for name in (
        "instance_uuid", "status", "host", "migration_type",
        "source_compute")}
    if call.mv_at_least(2, 80):
        filters.update(user_id=args.get("user_id"),
                       project_id=args.get("project_id"))
    migrations = call.backend.migrations.list_migrations(call.caller,
                                                         **filters)
    if not call.mv_at_least(2, 59):
        return json_response({"migrations": [
            _migration_view(call, m) for m in migrations]})
    limit, marker = _limit_marker(call)
    migrations = _page(list(reversed(migrations)), lambda m: m.uuid, marker,
                       limit)
    body = {"migrations": [_migration_view(call, m) for m in migrations]}
    links = _next_link(call, "os-migrations", limit, migrations,
                       migrations[-1].uuid if migrations else "")
    if links:
        body["migrations_links"] = links
    return json_response(body)


# -- servers/{id}/migrations --------------------------------------------------

def _server_migration_view(call: Call, migration: Migration) -> dict:
    view = {"id": migration.id, "status": migration.status,
            "server_uuid": migration.server_id, "dest_host": None,
            "created_at": migration.created_at,
            "updated_at": migration.updated_at,
            "memory_total_bytes": None, "memory_processed_bytes": None,
            "memory_remaining_bytes": None, "disk_total_bytes": None,
            "disk_processed_bytes": None, "disk_remaining_bytes": None,
            **_migration_hosts(migration)}
    _extend(call, view, migration)
    return view


def _require(call: Call, major: int, minor: int) -> None:
    """Routes that exist from a microversion on: 404 below, as nova."""
    if not call.mv_at_least(major, minor):
        raise exc.NovaNotFound("The resource could not be found.")


def list_server_migrations(call: Call, server_id: str):
    _require(call, 2, 23)
    return json_response({"migrations": [
        _server_migration_view(call, m)
        for m in call.backend.migrations.in_progress(call.caller,
                                                     server_id)]})


def get_server_migration(call: Call, server_id: str, migration_id: str):
    _require(call, 2, 23)
    migration = call.backend.migrations.get_in_progress(
        call.caller, server_id, _migration_id(migration_id))
    return json_response({"migration": _server_migration_view(call,
                                                              migration)})


def abort_server_migration(call: Call, server_id: str, migration_id: str):
    _require(call, 2, 24)
    call.backend.migrations.abort_migration(
        call.caller, server_id, _migration_id(migration_id),
        nova.request_id(call), allow_queued=call.mv_at_least(2, 65))
    return empty_response(202)


# -- os-instance-actions ------------------------------------------------------

def _action_view(call: Call, action: InstanceAction) -> dict:
    view = {"action": action.action, "instance_uuid": action.instance_uuid,
            "request_id": action.request_id, "user_id": action.user_id,
            "project_id": action.project_id,
            "start_time": action.start_time, "message": action.message}
    if call.mv_at_least(2, 58):
        view["updated_at"] = action.updated_at
    return view


def _event_view(call: Call, event: ActionEvent, project_id: str) -> dict:
    admin = call.caller.is_admin
    view = {"event": event.event, "start_time": event.start_time,
            "finish_time": event.finish_time, "result": event.result}
    if admin:
        view["traceback"] = event.traceback
    if call.mv_at_least(2, 62):
        view["hostId"] = nova.host_id(project_id, event.host)
        if admin:
            view["host"] = event.host
    if admin and call.mv_at_least(2, 84):
        view["details"] = event.details
    return view


def list_instance_actions(call: Call, server_id: str):
    limit = marker = None
    if call.mv_at_least(2, 58):
        limit, marker = _limit_marker(call)
    actions = call.backend.actions.list_actions(call.caller, server_id,
                                                marker=marker, limit=limit)
    body = {"instanceActions": [_action_view(call, a) for a in actions]}
    links = _next_link(call, f"servers/{server_id}/os-instance-actions",
                       limit, actions,
                       actions[-1].request_id if actions else "")
    if links:
        body["links"] = links
    return json_response(body)


def get_instance_action(call: Call, server_id: str, request_id: str):
    action = call.backend.actions.get_action(call.caller, server_id,
                                             request_id)
    view = _action_view(call, action)
    if call.caller.is_admin or call.mv_at_least(2, 51):
        view["events"] = [_event_view(call, e, action.project_id)
                          for e in action.events]
    return json_response({"instanceAction": view})


# -- os-services --------------------------------------------------------------

def _service_view(call: Call, service: Service) -> dict:
    view = {"id": service.uuid if call.mv_at_least(2, 53) else service.id,
            "binary": service.binary, "host": service.host,
            "zone": service.zone, "status": service.status,
            "state": service.state,
            # an up service reports every few seconds
            "updated_at": (isotime(utcnow()) if service.state == "up"
                           else service.updated_at),
            "disabled_reason": service.disabled_reason}
    if call.mv_at_least(2, 11):
        view["forced_down"] = service.forced_down
    return view


def list_services(call: Call):
    args = call.request.args
    return json_response({"services": [
        _service_view(call, s) for s in call.backend.services.list_services(
            call.caller, binary=args.get("binary"), host=args.get("host"))]})


def update_service(call: Call, service_id: str):
    body = call.json(exc.NovaBadRequest)
    if call.mv_at_least(2, 53):
        return _update_by_uuid(call, service_id, body)
    return _update_by_action(call, service_id, body)


def _update_by_uuid(call: Call, service_id: str, body: dict):
    try:
        uuid.UUID(service_id)
    except ValueError:
        raise exc.NovaBadRequest(f"Invalid uuid {service_id}")
    services = call.backend.services
    service = services.find_service(call.caller, service_id=service_id)
    status = body.get("status")
    if status not in (None, "enabled", "disabled"):
        raise exc.NovaBadRequest(f"Invalid input for field/attribute "
                                 f"status. Value: {status}.")
    if status == "enabled" and body.get("disabled_reason"):
        raise exc.NovaBadRequest("Specifying 'disabled_reason' with status "
                                 "'enabled' is invalid.")
    forced_down = body.get("forced_down")
    if status is None and forced_down is None:
        raise exc.NovaBadRequest("No updates were requested. Fields 'status' "
                                 "or 'forced_down' should be specified.")
    services.update_service(
        service, disabled=None if status is None else status == "disabled",
        disabled_reason=body.get("disabled_reason"),
        forced_down=(None if forced_down is None
                     else nova._bool(forced_down, "forced_down")))
    return json_response({"service": _service_view(call, service)})


def _update_by_action(call: Call, action: str, body: dict):
    actions = ["enable", "disable", "disable-log-reason"]
    if call.mv_at_least(2, 11):
        actions.append("force-down")
    if action not in actions:
        raise exc.NovaNotFound("Unknown action")
    for field in ("host", "binary"):
        if not isinstance(body.get(field), str):
            raise exc.NovaBadRequest(f"Invalid input for field/attribute "
                                     f"{field}. '{field}' is a required "
                                     f"property")
    services = call.backend.services
    service = services.find_service(call.caller, host=body["host"],
                                    binary=body["binary"])
    view = {"host": service.host, "binary": service.binary}
    if action == "force-down":
        if "forced_down" not in body:
            raise exc.NovaBadRequest("Missing forced_down field")
        forced = nova._bool(body["forced_down"], "forced_down")
        services.update_service(service, forced_down=forced)
        return json_response({"service": {**view, "forced_down": forced}})
    reason = None
    if action == "disable-log-reason":
        reason = body.get("disabled_reason")
        if not reason:
            raise exc.NovaBadRequest("Missing disabled reason field")
    services.update_service(service, disabled=action != "enable",
                            disabled_reason=reason)
    view["status"] = service.status
    if reason:
        view["disabled_reason"] = reason
    return json_response({"service": view})


ROUTES = (
    (f"{P}/os-migrations", "GET", list_migrations, False),
    (f"{P}/servers/<server_id>/migrations", "GET", list_server_migrations,
     False),
    (f"{P}/servers/<server_id>/migrations/<migration_id>", "GET",
     get_server_migration, False),
    (f"{P}/servers/<server_id>/migrations/<migration_id>", "DELETE",
     abort_server_migration, False),
    (f"{P}/servers/<server_id>/os-instance-actions", "GET",
     list_instance_actions, False),
    (f"{P}/servers/<server_id>/os-instance-actions/<request_id>", "GET",
     get_instance_action, False),
    (f"{P}/os-services", "GET", list_services, False),
    (f"{P}/os-services/<service_id>", "PUT", update_service, False),
)
