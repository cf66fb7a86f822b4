"""Hold the devcloud's Nova to upstream's own response schemas.

Tempest (``tempest.lib``, a test-only dependency) publishes a JSON schema of
every Nova response per microversion, and a service client per API whose
methods pick the schema for the request's microversion and validate the
response with it.  This module *replays* each response the devcloud's Nova
gives through the very tempest client method that would have made the
request: the client is built on a dummy auth provider, its HTTP object
returns the recorded response instead of sending anything, and
``base_compute_client.COMPUTE_MICROVERSION`` is set to the request's
microversion.  So tempest itself decides which schema applies (including
its quirks: ``os-migrateLive`` is checked with the 2.1 action schema at
every microversion, ``create_server`` with the ``adminPass`` one) and checks
the status code, the body, the headers it has schemas for and that the
response echoes the requested microversion.

Every call to ``/compute`` gets one :class:`Record`, with an outcome:

* ``ok``: a success response that tempest validated;
* ``violation``: tempest rejected the response (the messages say why, all
  schema errors of the body, not only the first);
* ``error``: a 4xx/5xx response; tempest validates no error body, so only
  its content type was checked;
* ``unchecked``: the devcloud serves the route but no tempest client method
  maps to it (coverage is visible instead of silently skipped);
* ``unserved``: the devcloud has no route for the call (a client asked for
  an API the devcloud does not implement).

Turn it on for a devcloud with :attr:`DevCloudConfig.conformance_log
<..config.DevCloudConfig.conformance_log>`, ``rally-metadata-devcloud serve
--conformance-log FILE`` or the environment variable :data:`ENV_VAR` (which
devcloud subprocesses inherit); one JSON line per call is appended to the
file.  :func:`load`, :func:`summarize` and :func:`format_summary` read it
back.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

ENV_VAR = "RMP_DEVCLOUD_CONFORMANCE"
PREFIX = "/compute"
VERSIONED = "/compute/v2.1"
DEFAULT_MICROVERSION = "2.1"
OUTCOMES = ("ok", "violation", "error", "unchecked", "unserved")
_MAX_MESSAGE = 600


def log_path(configured: str | Path | None) -> Path | None:
    """The conformance log to write: the configured one, else $ENV_VAR."""
    value = configured or os.environ.get(ENV_VAR)
    return Path(value) if value else None


# -- what tempest can check: nova's routes and the client methods -------------------

def _client(key: str, cls: str, method: str, *names: str, **kwargs) -> Callable:
    def call(clients, args):
        return getattr(clients[key], method)(*(args[n] for n in names),
                                             **kwargs)
    call.__qualname__ = f"{cls}.{method}"
    return call


def _on(key: str, cls: str) -> Callable[..., Callable]:
    """``_on("flavors", "FlavorsClient")("show_flavor", "id")``: a call of
    that client method with the route's arguments of those names."""
    return lambda method, *names, **kwargs: _client(key, cls, method, *names,
                                                    **kwargs)


_SERVERS = _on("servers", "ServersClient")
_FLAVORS = _on("flavors", "FlavorsClient")
_KEYPAIRS = _on("keypairs", "KeyPairsClient")
_HYPERVISORS = _on("hypervisors", "HypervisorClient")
_GROUPS = _on("server_groups", "ServerGroupsClient")
_INTERFACES = _on("interfaces", "InterfacesClient")
_IMAGES = _on("images", "ImagesClient")
_QUOTAS = _on("quotas", "QuotasClient")
_USAGES = _on("tenant_usages", "TenantUsagesClient")
_ZONES = _on("availability_zones", "AvailabilityZoneClient")

#: ``POST /servers/{id}/action``: the action (the body's key) -> method of
#: tempest's ServersClient (or of another client for createImage)
SERVER_ACTIONS: dict[str, Callable] = {
    "os-migrateLive": _SERVERS("live_migrate_server", "id"),
    "migrate": _SERVERS("migrate_server", "id"),
    "os-getConsoleOutput": _SERVERS("get_console_output", "id"),
    "reboot": _SERVERS("reboot_server", "id"),
    "rebuild": _SERVERS("rebuild_server", "id", image_ref=None),
    "resize": _SERVERS("resize_server", "id", flavor_ref=None),
    "confirmResize": _SERVERS("confirm_resize_server", "id"),
    "revertResize": _SERVERS("revert_resize_server", "id"),
    "os-stop": _SERVERS("stop_server", "id"),
    "os-start": _SERVERS("start_server", "id"),
    "lock": _SERVERS("lock_server", "id"),
    "unlock": _SERVERS("unlock_server", "id"),
    "suspend": _SERVERS("suspend_server", "id"),
    "resume": _SERVERS("resume_server", "id"),
    "pause": _SERVERS("pause_server", "id"),
    "unpause": _SERVERS("unpause_server", "id"),
    "os-resetState": _SERVERS("reset_state", "id"),
    "shelve": _SERVERS("shelve_server", "id"),
    "unshelve": _SERVERS("unshelve_server", "id"),
    "shelveOffload": _SERVERS("shelve_offload_server", "id"),
    "addSecurityGroup": _SERVERS("add_security_group", "id"),
    "removeSecurityGroup": _SERVERS("remove_security_group", "id"),
    "createBackup": _SERVERS("create_backup", "id"),
    "createImage": _IMAGES("create_image", "id"),
    "forceDelete": _SERVERS("force_delete_server", "id"),
    "restore": _SERVERS("restore_soft_deleted_server", "id"),
    "rescue": _SERVERS("rescue_server", "id"),
    "unrescue": _SERVERS("unrescue_server", "id"),
    "evacuate": _SERVERS("evacuate_server", "id"),
    "changePassword": _SERVERS("change_password", "id"),
    "os-getVNCConsole": _SERVERS("get_vnc_console", "id"),
    "addFixedIp": _SERVERS("add_fixed_ip", "id"),
    "removeFixedIp": _SERVERS("remove_fixed_ip", "id"),
    "resetNetwork": _SERVERS("reset_network", "id"),
    "injectNetworkInfo": _SERVERS("inject_network_info", "id"),
}

_ACTION = object()   # the route of server actions: dispatch on the body

#: (method, path under /compute/v2.1) -> tempest client method
ROUTES: dict[tuple[str, str], Any] = {
    ("GET", "/servers"): _SERVERS("list_servers", detail=False),
    ("GET", "/servers/detail"): _SERVERS("list_servers", detail=True),
    ("POST", "/servers"): _SERVERS("create_server"),
    ("GET", "/servers/<id>"): _SERVERS("show_server", "id"),
    ("PUT", "/servers/<id>"): _SERVERS("update_server", "id"),
    ("DELETE", "/servers/<id>"): _SERVERS("delete_server", "id"),
    ("POST", "/servers/<id>/action"): _ACTION,
    ("GET", "/servers/<id>/ips"): _SERVERS("list_addresses", "id"),
    ("GET", "/servers/<id>/ips/<net>"): _SERVERS(
        "list_addresses_by_network", "id", "net"),
    ("GET", "/servers/<id>/metadata"): _SERVERS("list_server_metadata", "id"),
    ("GET", "/servers/<id>/metadata/<key>"): _SERVERS(
        "show_server_metadata_item", "id", "key"),
    ("DELETE", "/servers/<id>/metadata/<key>"): _SERVERS(
        "delete_server_metadata_item", "id", "key"),
    ("GET", "/servers/<id>/os-instance-actions"): _SERVERS(
        "list_instance_actions", "id"),
    ("GET", "/servers/<id>/os-instance-actions/<req>"): _SERVERS(
        "show_instance_action", "id", "req"),
    ("GET", "/servers/<id>/os-interface"): _INTERFACES("list_interfaces",
                                                       "id"),
    ("GET", "/servers/<id>/os-interface/<port>"): _INTERFACES(
        "show_interface", "id", "port"),
    ("DELETE", "/servers/<id>/os-interface/<port>"): _INTERFACES(
        "delete_interface", "id", "port"),
    ("GET", "/servers/<id>/os-volume_attachments"): _SERVERS(
        "list_volume_attachments", "id"),
    ("GET", "/servers/<id>/os-volume_attachments/<vol>"): _SERVERS(
        "show_volume_attachment", "id", "vol"),
    ("GET", "/servers/<id>/os-security-groups"): _SERVERS(
        "list_security_groups_by_server", "id"),
    ("GET", "/servers/<id>/migrations"): _SERVERS(
        "list_in_progress_live_migration", "id"),
    ("POST", "/servers/<id>/migrations/<mig>/action"): _SERVERS(
        "force_complete_live_migration", "id", "mig"),
    ("GET", "/servers/<id>/diagnostics"): _SERVERS("show_server_diagnostics",
                                                   "id"),
    ("GET", "/servers/<id>/tags"): _SERVERS("list_tags", "id"),
    ("GET", "/flavors"): _FLAVORS("list_flavors", detail=False),
    ("GET", "/flavors/detail"): _FLAVORS("list_flavors", detail=True),
    ("GET", "/flavors/<id>"): _FLAVORS("show_flavor", "id"),
    ("GET", "/flavors/<id>/os-extra_specs"): _FLAVORS(
        "list_flavor_extra_specs", "id"),
    ("GET", "/flavors/<id>/os-flavor-access"): _FLAVORS(
        "list_flavor_access", "id"),
    ("GET", "/os-keypairs"): _KEYPAIRS("list_keypairs"),
    ("POST", "/os-keypairs"): _KEYPAIRS("create_keypair"),
    ("GET", "/os-keypairs/<name>"): _KEYPAIRS("show_keypair", "name"),
    ("DELETE", "/os-keypairs/<name>"): _KEYPAIRS("delete_keypair", "name"),
    ("GET", "/os-hypervisors"): _HYPERVISORS("list_hypervisors",
                                             detail=False),
    ("GET", "/os-hypervisors/detail"): _HYPERVISORS("list_hypervisors",
                                                    detail=True),
    ("GET", "/os-hypervisors/statistics"): _HYPERVISORS(
        "show_hypervisor_statistics"),
    ("GET", "/os-hypervisors/<id>"): _HYPERVISORS("show_hypervisor", "id"),
    ("GET", "/os-hypervisors/<id>/uptime"): _HYPERVISORS(
        "show_hypervisor_uptime", "id"),
    ("GET", "/os-hypervisors/<id>/search"): _HYPERVISORS(
        "search_hypervisor", "id"),
    ("GET", "/os-hypervisors/<id>/servers"): _HYPERVISORS(
        "list_servers_on_hypervisor", "id"),
    ("GET", "/os-server-groups"): _GROUPS("list_server_groups"),
    ("POST", "/os-server-groups"): _GROUPS("create_server_group"),
    ("GET", "/os-server-groups/<id>"): _GROUPS("show_server_group", "id"),
    ("DELETE", "/os-server-groups/<id>"): _GROUPS("delete_server_group",
                                                  "id"),
    ("GET", "/os-availability-zone"): _ZONES("list_availability_zones",
                                             detail=False),
    ("GET", "/os-availability-zone/detail"): _ZONES(
        "list_availability_zones", detail=True),
    ("GET", "/os-migrations"): _client("migrations", "MigrationsClient",
                                       "list_migrations"),
    ("GET", "/os-services"): _client("services", "ServicesClient",
                                     "list_services"),
    ("PUT", "/os-services/<id>"): _client("services", "ServicesClient",
                                          "update_service", "id"),
    ("GET", "/limits"): _client("limits", "LimitsClient", "show_limits"),
    ("GET", "/images"): _IMAGES("list_images", detail=False),
    ("GET", "/images/detail"): _IMAGES("list_images", detail=True),
    ("GET", "/images/<id>"): _IMAGES("show_image", "id"),
    ("GET", "/os-quota-sets/<id>"): _QUOTAS("show_quota_set", "id"),
    ("GET", "/os-quota-sets/<id>/detail"): _QUOTAS("show_quota_set", "id",
                                                   detail=True),
    ("GET", "/os-quota-sets/<id>/defaults"): _QUOTAS(
        "show_default_quota_set", "id"),
    ("GET", "/extensions"): _client("extensions", "ExtensionsClient",
                                    "list_extensions"),
    ("GET", "/os-simple-tenant-usage"): _USAGES("list_tenant_usages"),
    ("GET", "/os-simple-tenant-usage/<id>"): _USAGES("show_tenant_usage",
                                                     "id"),
    ("GET", "/os-aggregates"): _client("aggregates", "AggregatesClient",
                                       "list_aggregates"),
}

#: the version documents, outside /compute/v2.1
VERSION_ROUTES = {
    ("GET", "/compute"): _client("versions", "VersionsClient",
                                 "list_versions"),
    ("GET", "/compute/v2.1"): _client("versions", "VersionsClient",
                                      "get_version_by_url", "url"),
}

_CLIENT_CLASSES = {
    "servers": ("servers_client", "ServersClient"),
    "flavors": ("flavors_client", "FlavorsClient"),
    "keypairs": ("keypairs_client", "KeyPairsClient"),
    "hypervisors": ("hypervisor_client", "HypervisorClient"),
    "server_groups": ("server_groups_client", "ServerGroupsClient"),
    "availability_zones": ("availability_zone_client",
                           "AvailabilityZoneClient"),
    "migrations": ("migrations_client", "MigrationsClient"),
    "services": ("services_client", "ServicesClient"),
    "limits": ("limits_client", "LimitsClient"),
    "images": ("images_client", "ImagesClient"),
    "quotas": ("quotas_client", "QuotasClient"),
    "extensions": ("extensions_client", "ExtensionsClient"),
    "tenant_usages": ("tenant_usages_client", "TenantUsagesClient"),
    "interfaces": ("interfaces_client", "InterfacesClient"),
    "aggregates": ("aggregates_client", "AggregatesClient"),
    "versions": ("versions_client", "VersionsClient"),
}


#: Nova 2.88 removed these from GET /os-hypervisors/detail and
#: /os-hypervisors/{id} (and added ``uptime`` to the latter); tempest has no
#: schema past 2.53, so at 2.88+ its 2.53 one is used less these fields
HYPERVISOR_FIELDS_REMOVED_IN_2_88 = (
    "cpu_info", "current_workload", "disk_available_least", "free_disk_gb",
    "free_ram_mb", "local_gb", "local_gb_used", "memory_mb",
    "memory_mb_used", "running_vms", "vcpus", "vcpus_used")


def _without_2_88_removals(schema: dict, item_path: tuple) -> dict:
    import copy

    adjusted = copy.deepcopy(schema)
    hypervisor = adjusted["response_body"]
    for key in item_path:
        hypervisor = hypervisor[key]
    for field in HYPERVISOR_FIELDS_REMOVED_IN_2_88:
        hypervisor["properties"].pop(field, None)
        if field in hypervisor.get("required", []):
            hypervisor["required"].remove(field)
    hypervisor["properties"]["uptime"] = {"type": ["string", "null"]}
    return adjusted


# -- one exchange, one record --------------------------------------------------------

@dataclasses.dataclass
class Exchange:
    """One HTTP request and the devcloud's response to it."""

    method: str
    path: str
    query: str
    request_headers: dict[str, str]    # lower-case names
    request_body: bytes
    status: int
    response_headers: list[tuple[str, str]]
    response_body: bytes
    served: bool | None = None         # did the devcloud route it?

    def header(self, name: str) -> str | None:
        return self.request_headers.get(name.lower())


@dataclasses.dataclass
class Record:
    """The verdict on one exchange (one JSON line of the log)."""

    method: str
    path: str
    route: str
    microversion: str
    requested_microversion: str | None
    status: int
    outcome: str
    client: str = ""
    schema: str = ""
    messages: list[str] = dataclasses.field(default_factory=list)
    user_agent: str = ""
    devcloud: str = ""
    time: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def requested_microversion(headers: dict[str, str]) -> str | None:
    """The compute microversion a request asks for (None: none asked)."""
    for item in (headers.get("openstack-api-version") or "").split(","):
        service, _, version = item.strip().partition(" ")
        if service.lower() == "compute" and version.strip():
            return version.strip()
    value = headers.get("x-openstack-nova-api-version")
    return value.strip() if value and value.strip() else None


def _short(text: str, limit: int = _MAX_MESSAGE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _FakeAuth:
    """An auth provider that decorates nothing: requests are replayed."""

    def auth_request(self, method, url, headers=None, body=None,
                     filters=None):
        return f"http://devcloud/compute/v2.1/{url}", headers or {}, body

    def base_url(self, filters=None, auth_data=None):
        return "http://devcloud/compute/v2.1"

    def get_token(self):
        return "token"

    def set_alt_auth_data(self, *args, **kwargs):
        pass

    def reset_alt_auth_data(self):
        pass


class _Response(dict):
    """The response as tempest's HTTP object returns it."""

    def __init__(self, exchange: Exchange) -> None:
        super().__init__()
        for name, value in exchange.response_headers:
            key = name.lower()
            self[key] = f"{self[key]}, {value}" if key in self else value
        self.status = exchange.status
        self["status"] = str(exchange.status)
        self.reason = ""
        self.version = 11


class _Replay:
    """Stands in for tempest's urllib3 pool: answers with the recording."""

    def __init__(self) -> None:
        self.exchange: Exchange | None = None

    def request(self, url, method, headers=None, body=None, chunked=False,
                preload_content=True, **kwargs):
        return _Response(self.exchange), self.exchange.response_body


class Checker:
    """Validates exchanges with tempest's compute clients (thread-safe).

    Importing tempest is done here, so the devcloud itself never needs it.
    """

    def __init__(self) -> None:
        import importlib

        import jsonschema
        from werkzeug.routing import Map, Rule
        from tempest.lib import exceptions as tempest_exc
        from tempest.lib.common import rest_client
        from tempest.lib.services.compute import base_compute_client

        self._jsonschema = jsonschema
        self._rest_client = rest_client
        self._exc = tempest_exc
        self._base = base_compute_client
        self._lock = threading.Lock()
        self._replay = _Replay()
        self.clients: dict[str, Any] = {}
        for key, (module, name) in _CLIENT_CLASSES.items():
            cls = getattr(importlib.import_module(
                f"tempest.lib.services.compute.{module}"), name)
            self.clients[key] = self._recording_client(cls)
        rules = [Rule(path, methods=[method], endpoint=(method, path))
                 for method, path in ROUTES]
        self._map = Map(rules, strict_slashes=False, merge_slashes=False)
        self._schema_names: dict[int, str] | None = None
        self._microversion: tuple[int, int] = (2, 1)
        from tempest.lib.api_schema.response.compute.v2_53 import \
            hypervisors as v253
        self._adjusted = {
            id(v253.list_hypervisors_detail): (
                _without_2_88_removals(
                    v253.list_hypervisors_detail,
                    ("properties", "hypervisors", "items")),
                "v2_53.hypervisors.list_hypervisors_detail less the fields "
                "nova 2.88 removed"),
            id(v253.get_hypervisor): (
                _without_2_88_removals(v253.get_hypervisor,
                                       ("properties", "hypervisor")),
                "v2_53.hypervisors.get_hypervisor less the fields nova 2.88 "
                "removed"),
        }
        self._adjusted_names = {id(a): n for a, n in self._adjusted.values()}

    def _recording_client(self, cls):
        replay = self._replay
        checker = self

        class Recording(cls):
            schemas_used: list = []

            def validate_response(self, schema, resp, body):
                schema = checker._adjust(schema)
                self.schemas_used.append(schema)
                return super().validate_response(schema, resp, body)

            def _log_request_start(self, *args, **kwargs):
                pass

            def _log_request(self, *args, **kwargs):
                pass

        Recording.__name__ = cls.__name__
        client = Recording(_FakeAuth(), "compute", "RegionOne")
        client.http_obj = replay
        return client

    def _adjust(self, schema: dict) -> dict:
        """Tempest's schema, or its known correction for the microversion."""
        if self._microversion >= (2, 88) and id(schema) in self._adjusted:
            return self._adjusted[id(schema)][0]
        return schema

    # -- the verdict ------------------------------------------------------------------

    def check(self, exchange: Exchange, devcloud: str = "") -> Record:
        requested = requested_microversion(exchange.request_headers)
        effective = requested
        if requested == "latest":
            echoed = {k.lower(): v for k, v in exchange.response_headers}
            effective = echoed.get("x-openstack-nova-api-version", "latest")
        record = Record(
            method=exchange.method, path=exchange.path, route="",
            microversion=effective or DEFAULT_MICROVERSION,
            requested_microversion=requested, status=exchange.status,
            outcome="unchecked",
            user_agent=_short(exchange.header("user-agent") or "", 120),
            devcloud=devcloud, time=round(time.time(), 3))
        route, call, args = self._route(exchange)
        record.route = route
        if exchange.served is False:
            record.outcome = "unserved"
            record.client = getattr(call, "__qualname__", "")
            record.messages = [_short(exchange.response_body.decode(
                "utf-8", "replace"), 200)]
            return record
        if call is None:
            record.messages = ["no tempest client method for this route"]
            return record
        record.client = call.__qualname__
        with self._lock:
            self._base.COMPUTE_MICROVERSION = effective
            self._microversion = _mv_key(effective or DEFAULT_MICROVERSION)
            self._replay.exchange = exchange
            for client in self.clients.values():
                client.schemas_used.clear()
            try:
                try:
                    call(self.clients, args)
                    record.outcome = "ok"
                finally:
                    used = [s for c in self.clients.values()
                            for s in c.schemas_used]
                    record.schema = self._schema_name(used[-1]) if used else ""
            except self._exc.JSONSchemaNotFound as e:
                record.outcome = "unchecked"
                record.messages = [_short(e)]
            except Exception as e:     # noqa: BLE001 - every refusal counts
                record.outcome, record.messages = self._judge(
                    exchange, e, used[-1] if used else None)
            finally:
                self._base.COMPUTE_MICROVERSION = None
                self._replay.exchange = None
        return record

    def _route(self, exchange: Exchange):
        path = exchange.path.rstrip("/") or "/"
        key = (exchange.method, path)
        if key in VERSION_ROUTES:
            return path, VERSION_ROUTES[key], {"url": path}
        if exchange.method == "HEAD":
            return path, None, {}
        if not (path == VERSIONED or path.startswith(VERSIONED + "/")):
            return path, None, {}
        sub = path[len(VERSIONED):] or "/"
        from werkzeug.exceptions import HTTPException
        try:
            (method, template), args = self._map.bind(
                "devcloud").match(sub, method=exchange.method)
        except HTTPException:
            return _template(sub), None, {}
        call = ROUTES[(method, template)]
        route = f"{method} {template}"
        if call is _ACTION:
            try:
                action = next(iter(json.loads(exchange.request_body or b"{}")))
            except (ValueError, TypeError, StopIteration):
                action = "?"
            call = SERVER_ACTIONS.get(action)
            template = f"{template} {action}"
        return template, call, args

    def _judge(self, exchange: Exchange, error: Exception,
               schema: dict | None) -> tuple[str, list[str]]:
        exc = self._exc
        status_errors = (
            exc.Unauthorized, exc.Forbidden, exc.NotFound, exc.BadRequest,
            exc.Gone, exc.NotAcceptable, exc.Conflict, exc.PreconditionFailed,
            exc.OverLimit, exc.RateLimitExceeded, exc.InvalidContentType,
            exc.UnprocessableEntity, exc.ServerFault, exc.NotImplemented,
            exc.UnexpectedResponseCode)
        if exchange.status >= 400 and isinstance(error, status_errors):
            return "error", [_short(f"{type(error).__name__}: "
                                    f"{_error_text(exchange)}", 200)]
        if (isinstance(error, exc.InvalidHTTPResponseBody)
                and schema is not None and schema.get("response_body")):
            messages = self._all_body_errors(exchange, schema["response_body"])
            if messages:
                return "violation", messages
        return "violation", [_short(f"{type(error).__name__}: {error}")]

    def _all_body_errors(self, exchange: Exchange, body_schema: dict
                         ) -> list[str]:
        try:
            body = json.loads(exchange.response_body)
        except ValueError as e:
            return [f"body is not JSON: {e}"]
        validator = self._rest_client.JSONSCHEMA_VALIDATOR(
            body_schema, format_checker=self._rest_client.FORMAT_CHECKER)
        messages = []
        for error in sorted(validator.iter_errors(body),
                            key=lambda e: list(map(str, e.absolute_path))):
            where = "/".join(str(p) for p in error.absolute_path) or "(body)"
            text = error.message
            if error.context:
                best = self._jsonschema.exceptions.best_match(error.context)
                text += f" [best match: {best.message}]"
            message = _short(f"{_generic(where)}: {text}", 400)
            if message not in messages:     # one per kind, not per item
                messages.append(message)
        return messages

    def _schema_name(self, schema: dict) -> str:
        if id(schema) in self._adjusted_names:
            return self._adjusted_names[id(schema)]
        if self._schema_names is None:
            self._schema_names = _schema_index()
        return self._schema_names.get(id(schema), "?")


def _schema_index() -> dict[int, str]:
    """id(schema dict) -> 'v2_79.servers.get_server' (the newest module
    that defines it, as a client's get_schema would pick)."""
    import importlib
    import pkgutil

    import tempest.lib.api_schema.response.compute as package

    names: dict[int, str] = {}
    for info in pkgutil.walk_packages(package.__path__,
                                      package.__name__ + "."):
        if info.ispkg:
            continue
        module = importlib.import_module(info.name)
        short = info.name[len(package.__name__) + 1:]
        for attr, value in vars(module).items():
            if isinstance(value, dict) and "status_code" in value:
                names.setdefault(id(value), f"{short}.{attr}")
    return names


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                   r"[0-9a-f]{12}|[0-9a-f]{32}")


def _template(path: str) -> str:
    """An unrouted path with its ids replaced, to group like calls."""
    return re.sub(r"/\d+(?=/|$)", "/<n>", _UUID.sub("<id>", path))


def _generic(where: str) -> str:
    """servers/3/status -> servers/*/status (to group like violations)."""
    return re.sub(r"(?<=/)\d+(?=/|$)", "*", where)


def _error_text(exchange: Exchange) -> str:
    try:
        body = json.loads(exchange.response_body)
        (_, inner), = body.items()
        return str(inner.get("message", inner))
    except (ValueError, AttributeError, TypeError):
        return exchange.response_body.decode("utf-8", "replace")


# -- the WSGI middleware and the log -------------------------------------------------

class JsonlSink:
    """Appends one JSON line per record; several processes may share it
    (one ``write`` per line on an ``O_APPEND`` file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, record: Record) -> None:
        line = (json.dumps(record.to_dict(), sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class ConformanceMiddleware:
    """Checks every ``/compute`` exchange of the wrapped WSGI app.

    :param served: tells whether the devcloud routes (method, path); None
        when unknown.
    """

    def __init__(self, app, checker: Checker, sink: Callable[[Record], None],
                 label: str = "",
                 served: Callable[[str, str], bool] | None = None) -> None:
        self.app = app
        self.checker = checker
        self.sink = sink
        self.label = label
        self.served = served

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            return self.app(environ, start_response)
        from werkzeug.wsgi import get_input_stream
        body = get_input_stream(environ).read()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = True
        headers = {k[5:].replace("_", "-").lower(): v
                   for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        seen: dict[str, Any] = {}

        def capture(status, response_headers, exc_info=None):
            seen["status"], seen["headers"] = status, list(response_headers)
            return start_response(status, response_headers, exc_info)

        iterable = self.app(environ, capture)
        try:
            chunks = list(iterable)
        finally:
            if hasattr(iterable, "close"):
                iterable.close()
        method = environ.get("REQUEST_METHOD", "GET")
        exchange = Exchange(
            method=method, path=path,
            query=environ.get("QUERY_STRING", ""), request_headers=headers,
            request_body=body, status=int(seen["status"].split()[0]),
            response_headers=seen["headers"], response_body=b"".join(chunks),
            served=self.served(method, path) if self.served else None)
        try:
            self.sink(self.checker.check(exchange, self.label))
        except Exception as e:        # noqa: BLE001 - never break the API
            self.sink(Record(method=method, path=path, route="",
                             microversion="?", requested_microversion=None,
                             status=exchange.status, outcome="violation",
                             messages=[_short(f"checker crashed: {e!r}")],
                             devcloud=self.label))
        return chunks


def middleware(path: str | Path, label: str = "",
               served: Callable[[str, str], bool] | None = None
               ) -> Callable[[Any], ConformanceMiddleware]:
    """A WSGI wrapper writing the verdict on each Nova call to ``path``.

    Builds the checker now, so a missing tempest fails the devcloud's start
    with a clear message.
    """
    try:
        checker = Checker()
    except ImportError as missing:
        raise RuntimeError(
            f"the conformance checker needs {missing.name} (tempest): pip "
            f"install 'rally-metadata-plugin[test]'") from missing
    sink = JsonlSink(path)
    return lambda app: ConformanceMiddleware(app, checker, sink, label, served)


def served_by(url_map) -> Callable[[str, str], bool]:
    """Whether a werkzeug ``Map`` routes (method, path)."""
    from werkzeug.exceptions import HTTPException

    adapter = url_map.bind("devcloud")

    def served(method: str, path: str) -> bool:
        try:
            adapter.match(path, method=method)
            return True
        except HTTPException:
            return False
    return served


# -- reading the log back ------------------------------------------------------------

def load(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()
            if line.strip()]


def _mv_key(version: str):
    try:
        major, minor = version.split(".")
        return (int(major), int(minor))
    except ValueError:
        return (99, 99)


@dataclasses.dataclass
class Summary:
    total: int
    by_outcome: collections.Counter
    checked_by_microversion: dict[str, int]
    by_route: dict[tuple[str, str, str], collections.Counter]
    violations: list[tuple[tuple, int]]      # (route, mv, status, msg), n
    unchecked: collections.Counter           # (method, route) -> n
    unserved: collections.Counter            # (method, route) -> n
    errors: collections.Counter              # (method, route, status) -> n

    @property
    def checked(self) -> int:
        return self.by_outcome["ok"] + self.by_outcome["violation"]


def summarize(records: Iterable[dict]) -> Summary:
    records = list(records)
    by_outcome = collections.Counter(r["outcome"] for r in records)
    checked = collections.Counter(
        r["microversion"] for r in records
        if r["outcome"] in ("ok", "violation"))
    by_route: dict = collections.defaultdict(collections.Counter)
    violations: collections.Counter = collections.Counter()
    unchecked: collections.Counter = collections.Counter()
    unserved: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    for r in records:
        key = (r["method"], r["route"])
        by_route[(r["method"], r["route"], r["microversion"])][
            r["outcome"]] += 1
        if r["outcome"] == "violation":
            for message in r["messages"] or ["?"]:
                violations[(f"{r['method']} {r['route']}", r["microversion"],
                            r["status"], r.get("schema", ""), message)] += 1
        elif r["outcome"] == "unchecked":
            unchecked[key] += 1
        elif r["outcome"] == "unserved":
            unserved[key] += 1
        elif r["outcome"] == "error":
            errors[(*key, r["status"])] += 1
    return Summary(
        total=len(records), by_outcome=by_outcome,
        checked_by_microversion=dict(sorted(checked.items(),
                                            key=lambda kv: _mv_key(kv[0]))),
        by_route=dict(by_route),
        violations=sorted(violations.items(),
                          key=lambda kv: (kv[0][0], _mv_key(kv[0][1]),
                                          kv[0][4])),
        unchecked=unchecked, unserved=unserved, errors=errors)


def format_summary(summary: Summary) -> str:
    lines = [f"nova calls: {summary.total}; "
             + ", ".join(f"{o} {summary.by_outcome[o]}" for o in OUTCOMES)]
    lines.append("checked per microversion: " + ", ".join(
        f"{mv}: {n}" for mv, n in summary.checked_by_microversion.items()))
    lines.append("by route and microversion (outcome counts):")
    for (method, route, mv), counts in sorted(
            summary.by_route.items(),
            key=lambda kv: (kv[0][1], kv[0][0], _mv_key(kv[0][2]))):
        lines.append(f"  {method} {route} @{mv}: " + ", ".join(
            f"{o} {counts[o]}" for o in OUTCOMES if counts[o]))
    lines.append(f"violations ({len(summary.violations)} distinct):")
    for (route, mv, status, schema, message), n in summary.violations:
        lines.append(f"  {route} @{mv} -> {status} [{schema}] x{n}: "
                     f"{message}")
    lines.append("unchecked (served, no tempest mapping): " + (", ".join(
        f"{m} {r} x{n}" for (m, r), n in sorted(summary.unchecked.items()))
        or "none"))
    lines.append("unserved (no devcloud route): " + (", ".join(
        f"{m} {r} x{n}" for (m, r), n in sorted(summary.unserved.items()))
        or "none"))
    lines.append("error responses: " + (", ".join(
        f"{m} {r} {s} x{n}" for (m, r, s), n in sorted(
            summary.errors.items())) or "none"))
    return "\n".join(lines)
