"""Nova (compute v2.1) with microversions 2.1 .. 2.96.

The microversion comes from ``OpenStack-API-Version: compute 2.x`` or
``X-OpenStack-Nova-API-Version: 2.x`` (2.1 without either), is echoed on
every response, and changes request validation and views where rally or
novaclient can tell the difference (keypair generation up to 2.91,
``os-migrateLive`` bodies and pre-checks, hypervisor ids, flavor views).
Every response carries the request's id (``x-openstack-request-id`` and
``x-compute-request-id``), which names the instance action a request
recorded. Migrations, instance actions and services are in
:mod:`.nova_admin`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
import uuid

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.api.base import (Call, Service,
                                                     empty_response,
                                                     json_response)
from rally_metadata_plugin.devcloud.model.compute import (Flavor, Keypair,
                                                          Server, ServerGroup)
from rally_metadata_plugin.devcloud.model.server_ports import (
    NetworkRequest, ServerAddress)
from rally_metadata_plugin.devcloud.model.services import AVAILABILITY_ZONE

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 96)
BOOLEAN_STRINGS = {"true": True, "1": True, "yes": True, "on": True,
                   "false": False, "0": False, "no": False, "off": False}
MISSING = object()


def _fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def parse_microversion(call: Call) -> None:
    headers = call.request.headers
    value = None
    for item in headers.get("OpenStack-API-Version", "").split(","):
        service, _, version = item.strip().partition(" ")
        if service.lower() == "compute" and version:
            value = version.strip()
    if value is None:
        value = headers.get("X-OpenStack-Nova-API-Version")
    if not value:
        call.microversion = MIN_VERSION
        return
    if value == "latest":
        call.microversion = MAX_VERSION
        return
    match = re.fullmatch(r"(\d+)\.(\d+)", value.strip())
    if not match:
        raise exc.NovaBadRequest(
            f"API Version String {value} is of invalid format. Must be of "
            f"format MajorNum.MinorNum.")
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise exc.NovaNotAcceptable(
            f"Version {value} is not supported by the API. Minimum is "
            f"{_fmt(MIN_VERSION)} and maximum is {_fmt(MAX_VERSION)}.")
    call.microversion = version


def request_id(call: Call) -> str:
    """The request's id, ``req-<uuid>`` (made on first use)."""
    environ = call.request.environ
    if "openstack.request_id" not in environ:
        environ["openstack.request_id"] = f"req-{uuid.uuid4()}"
    return environ["openstack.request_id"]


def echo_microversion(call: Call, response) -> None:
    version = _fmt(call.microversion)
    response.headers["X-OpenStack-Nova-API-Version"] = version
    response.headers["OpenStack-API-Version"] = f"compute {version}"
    response.headers["Vary"] = ("OpenStack-API-Version, "
                                "X-OpenStack-Nova-API-Version")
    response.headers["x-openstack-request-id"] = request_id(call)
    response.headers["x-compute-request-id"] = request_id(call)


SERVICE = Service(
    name="nova", prefix="/compute",
    not_found=lambda path: exc.NovaNotFound("The resource could not be "
                                            "found."),
    method_not_allowed=lambda method: exc.NovaError(
        f"The method {method} is not allowed for this resource.", 405),
    prepare=parse_microversion, finish=echo_microversion)


def _links(call: Call, kind: str, resource_id: str) -> list[dict]:
    return [{"rel": "self",
             "href": f"{call.base_url}/compute/v2.1/{kind}/{resource_id}"},
            {"rel": "bookmark",
             "href": f"{call.base_url}/compute/{kind}/{resource_id}"}]


def _bool(value, field: str):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in BOOLEAN_STRINGS:
        return BOOLEAN_STRINGS[value.lower()]
    raise exc.NovaBadRequest(f"Invalid input for field/attribute {field}. "
                             f"Value: {value}. {value!r} is not of type "
                             f"'boolean'")


def _unexpected(extra: set[str]) -> exc.NovaBadRequest:
    listed = ", ".join(repr(k) for k in sorted(extra))
    return exc.NovaBadRequest(f"Invalid input for field/attribute "
                              f"os-migrateLive. Additional properties are "
                              f"not allowed ({listed} was unexpected)")


# -- versions -----------------------------------------------------------------

def _version_doc(call: Call) -> dict:
    return {"id": "v2.1", "status": "CURRENT", "version": _fmt(MAX_VERSION),
            "min_version": _fmt(MIN_VERSION),
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self",
                       "href": f"{call.base_url}/compute/v2.1/"}]}


def versions(call: Call):
    return json_response({"versions": [_version_doc(call)]})


def version_v21(call: Call):
    return json_response({"version": _version_doc(call)})


# -- flavors ------------------------------------------------------------------

def _flavor_view(call: Call, flavor: Flavor, detail: bool = True) -> dict:
    view = {"id": flavor.id, "name": flavor.name,
            "links": _links(call, "flavors", flavor.id)}
    if call.mv_at_least(2, 55):
        # 2.55 added the description to the summary list as well.
        view["description"] = None
    if not detail:
        return view
    view.update({
        "ram": flavor.ram, "disk": flavor.disk, "vcpus": flavor.vcpus,
        "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": False,
        "os-flavor-access:is_public": True, "rxtx_factor": 1.0,
        "swap": 0 if call.mv_at_least(2, 75) else ""})
    if call.mv_at_least(2, 61):
        view["extra_specs"] = {}
    return view


def list_flavors(call: Call, detail: bool = False):
    return json_response({"flavors": [
        _flavor_view(call, f, detail)
        for f in call.backend.compute.list_flavors()]})


def list_flavors_detail(call: Call):
    return list_flavors(call, detail=True)


def get_flavor(call: Call, flavor_id: str):
    return json_response({"flavor": _flavor_view(
        call, call.backend.compute.get_flavor(flavor_id))})


# -- keypairs -----------------------------------------------------------------

def _keypair_view(call: Call, keypair: Keypair, full: bool = False) -> dict:
    view = {"name": keypair.name, "public_key": keypair.public_key,
            "fingerprint": keypair.fingerprint}
    if call.mv_at_least(2, 2):
        view["type"] = keypair.type
    if full:
        view.update({"user_id": keypair.user_id, "id": 1, "deleted": False,
                     "created_at": keypair.created_at, "updated_at": None,
                     "deleted_at": None})
    return view


def list_keypairs(call: Call):
    return json_response({"keypairs": [
        {"keypair": _keypair_view(call, k)}
        for k in call.backend.compute.list_keypairs(call.caller)]})


def create_keypair(call: Call):
    body = call.json(exc.NovaBadRequest).get("keypair")
    if not isinstance(body, dict) or not body.get("name"):
        raise exc.NovaBadRequest("Invalid input for field/attribute keypair. "
                                 "'name' is a required property")
    allowed = {"name", "public_key"}
    if call.mv_at_least(2, 2):
        allowed.add("type")
    if call.mv_at_least(2, 10):
        allowed.add("user_id")
    extra = set(body) - allowed
    if extra:
        raise exc.NovaBadRequest(f"Additional properties are not allowed "
                                 f"({', '.join(sorted(extra))} was "
                                 f"unexpected)")
    public_key = body.get("public_key")
    if public_key is None and call.mv_at_least(2, 92):
        # from 2.92 nova no longer generates keys
        raise exc.NovaBadRequest("Invalid input for field/attribute keypair. "
                                 "'public_key' is a required property")
    key_type = body.get("type", "ssh")
    if key_type not in ("ssh", "x509"):
        raise exc.NovaBadRequest(f"Invalid input for field/attribute type. "
                                 f"Value: {key_type}.")
    keypair, private = call.backend.compute.create_keypair(
        call.caller, body["name"], public_key, key_type)
    view = _keypair_view(call, keypair)
    view["user_id"] = keypair.user_id
    if private is not None:
        view["private_key"] = private
    return json_response({"keypair": view},
                         status=201 if call.mv_at_least(2, 2) else 200)


def get_keypair(call: Call, name: str):
    return json_response({"keypair": _keypair_view(
        call, call.backend.compute.get_keypair(call.caller, name),
        full=True)})


def delete_keypair(call: Call, name: str):
    call.backend.compute.delete_keypair(call.caller, name)
    return empty_response(204 if call.mv_at_least(2, 2) else 202)


# -- servers ------------------------------------------------------------------

def host_id(project_id: str, host: str) -> str:
    """Nova's ``hostId``: opaque, per project and host ('' without host)."""
    return hashlib.sha224((project_id + host).encode()).hexdigest() \
        if host else ""


def _address_view(address: ServerAddress) -> dict:
    return {"addr": address.address,
            "version": ipaddress.ip_address(address.address).version,
            "OS-EXT-IPS:type": address.kind,
            "OS-EXT-IPS-MAC:mac_addr": address.mac_address}


def server_view(call: Call, server: Server, detail: bool = True,
                show: bool = False) -> dict:
    """A server as nova shows it at the call's microversion.

    ``detail``: the detail view (``/servers/detail``, show, create);
    ``show``: a single server (show, update, rebuild), which from 2.71 also
    names its server groups.
    """
    view = {"id": server.id, "name": server.name,
            "links": _links(call, "servers", server.id)}
    if not detail:
        return view
    backend = call.backend
    flavor = backend.compute.find_flavor(server.flavor_id)
    if call.mv_at_least(2, 47) and flavor is not None:
        flavor_view = {"original_name": flavor.name, "vcpus": flavor.vcpus,
                       "ram": flavor.ram, "disk": flavor.disk,
                       "ephemeral": 0, "swap": 0, "extra_specs": {}}
    else:
        flavor_view = {"id": server.flavor_id,
                       "links": _links(call, "flavors", server.flavor_id)}
    view.update({
        "status": server.status,
        "tenant_id": server.project_id,
        "user_id": server.user_id,
        "created": server.created_at,
        "updated": server.updated_at,
        "hostId": host_id(server.project_id, server.host),
        "image": {"id": server.image_id,
                  "links": _links(call, "images", server.image_id)},
        "flavor": flavor_view,
        "addresses": {
            network: [_address_view(a) for a in addresses]
            for network, addresses in
            backend.server_ports.addresses(server.id).items()},
        "key_name": server.key_name,
        "metadata": server.metadata,
        "accessIPv4": "", "accessIPv6": "", "progress": 0,
        "config_drive": "",
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": AVAILABILITY_ZONE,
        "OS-EXT-STS:task_state": server.task_state,
        "OS-EXT-STS:vm_state": server.vm_state,
        "OS-EXT-STS:power_state": server.power_state,
        "OS-SRV-USG:launched_at": server.launched_at,
        "OS-SRV-USG:terminated_at": None,
        "os-extended-volumes:volumes_attached": [],
        "security_groups": [{"name": n} for n in server.security_groups],
    })
    if call.caller.is_admin:
        # extended server attributes are admin-only by nova's policy
        view.update({
            "OS-EXT-SRV-ATTR:host": server.host,
            "OS-EXT-SRV-ATTR:hypervisor_hostname": server.host,
            "OS-EXT-SRV-ATTR:instance_name": f"instance-{server.seq:08x}",
        })
        if call.mv_at_least(2, 3):
            view.update({
                "OS-EXT-SRV-ATTR:hostname": server.hostname,
                "OS-EXT-SRV-ATTR:reservation_id": f"r-{server.seq:08x}",
                "OS-EXT-SRV-ATTR:launch_index": server.launch_index,
                "OS-EXT-SRV-ATTR:kernel_id": "",
                "OS-EXT-SRV-ATTR:ramdisk_id": "",
                "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                "OS-EXT-SRV-ATTR:user_data": None})
    if server.status == "ERROR" and server.fault:
        view["fault"] = dataclasses.asdict(server.fault)
    if call.mv_at_least(2, 9):
        view["locked"] = False
    if call.mv_at_least(2, 19):
        view["description"] = None
    if call.mv_at_least(2, 26):
        view["tags"] = []
    if call.mv_at_least(2, 63):
        view["trusted_image_certificates"] = None
    if show and call.mv_at_least(2, 71):
        view["server_groups"] = backend.compute.groups_of(server.id)
    if call.mv_at_least(2, 73):
        view["locked_reason"] = None
    if call.mv_at_least(2, 96):
        view["pinned_availability_zone"] = None
    return view


def _int_arg(call: Call, name: str) -> int | None:
    value = call.request.args.get(name)
    if value is None:
        return None
    try:
        number = int(value)
        if number < 0:
            raise ValueError
        return number
    except ValueError:
        raise exc.NovaBadRequest(f"{name} param must be an integer")


def list_servers(call: Call, detail: bool = False):
    args = call.request.args
    all_tenants = args.get("all_tenants", "0").lower() not in ("0", "false",
                                                               "no", "off")
    limit = _int_arg(call, "limit")
    servers = call.backend.compute.list_servers(
        call.caller, all_tenants=all_tenants, marker=args.get("marker"),
        limit=limit, name=args.get("name"), status=args.get("status"))
    body = {"servers": [server_view(call, s, detail) for s in servers]}
    if limit and len(servers) == limit:
        path = "servers/detail" if detail else "servers"
        body["servers_links"] = [{
            "rel": "next",
            "href": f"{call.base_url}/compute/v2.1/{path}?limit={limit}"
                    f"&marker={servers[-1].id}"}]
    return json_response(body)


def list_servers_detail(call: Call):
    return list_servers(call, detail=True)


def get_server(call: Call, server_id: str):
    return json_response({"server": server_view(
        call, call.backend.compute.get_server(call.caller, server_id), show=True)})


def _ref(value) -> str:
    """imageRef/flavorRef may be a bare id or a URL ending in it."""
    return str(value).rstrip("/").rsplit("/", 1)[-1]


def create_server(call: Call):
    body = call.json(exc.NovaBadRequest).get("server")
    if not isinstance(body, dict):
        raise exc.NovaBadRequest("Invalid input for field/attribute server. "
                                 "'server' is a required property")
    for field in ("name", "flavorRef", "imageRef"):
        if not body.get(field):
            raise exc.NovaBadRequest(f"Invalid input for field/attribute "
                                     f"server. '{field}' is a required "
                                     f"property")
    networks = body.get("networks", MISSING)
    if networks is MISSING:
        if call.mv_at_least(2, 37):
            raise exc.NovaBadRequest("Invalid input for field/attribute "
                                     "server. 'networks' is a required "
                                     "property")
        networks = None
    elif isinstance(networks, str):
        if not call.mv_at_least(2, 37) or networks not in ("auto", "none"):
            raise exc.NovaBadRequest(f"Invalid input for field/attribute "
                                     f"networks. Value: {networks}.")
    elif isinstance(networks, list):
        for item in networks:
            if not isinstance(item, dict) or not (item.get("uuid")
                                                  or item.get("port")):
                raise exc.NovaBadRequest("Invalid input for field/attribute "
                                         "networks: uuid or port required")
        networks = [NetworkRequest(network_id=item.get("uuid"),
                                   port_id=item.get("port"),
                                   fixed_ip=item.get("fixed_ip"))
                    for item in networks]
    else:
        raise exc.NovaBadRequest("Invalid input for field/attribute networks.")
    groups = [g.get("name") if isinstance(g, dict) else str(g)
              for g in body.get("security_groups") or []]
    try:
        min_count = int(body.get("min_count", 1))
        max_count = int(body.get("max_count", min_count))
    except (TypeError, ValueError):
        raise exc.NovaBadRequest("min_count and max_count must be integers")
    if not 1 <= min_count <= max_count:
        raise exc.NovaBadRequest("min_count must be <= max_count")
    servers = call.backend.compute.create_server(
        call.caller, name=str(body["name"]), image_id=_ref(body["imageRef"]),
        flavor_id=_ref(body["flavorRef"]), key_name=body.get("key_name"),
        networks=networks, security_groups=groups, count=max_count,
        metadata=body.get("metadata"))
    first = servers[0]
    return json_response({"server": {
        "id": first.id, "links": _links(call, "servers", first.id),
        "OS-DCF:diskConfig": "MANUAL", "adminPass": "devcloud",
        "security_groups": [{"name": n} for n in first.security_groups]}},
        status=202)


def delete_server(call: Call, server_id: str):
    call.backend.compute.delete_server(call.caller, server_id)
    return empty_response(204)


def server_action(call: Call, server_id: str):
    body = call.json(exc.NovaBadRequest)
    if "os-migrateLive" in body:
        host, block_migration, force = _parse_migrate_live(
            call, body["os-migrateLive"])
        call.backend.migrations.live_migrate(
            call.caller, server_id, host, request_id=request_id(call),
            block_migration=block_migration, force=force,
            async_checks=call.mv_at_least(2, 34))
        return empty_response(202)
    if "os-getConsoleOutput" in body:
        output = call.backend.compute.console_output(call.caller,
                                                    server_id)
        return json_response({"output": output})
    action = next(iter(body), "")
    raise exc.NovaBadRequest(f"There is no such action: {action}")


def _parse_migrate_live(call: Call, args
                        ) -> tuple[str | None, bool | None, bool]:
    """Validate an ``os-migrateLive`` body as nova's schema for the
    request's microversion does.

    :returns: the requested host, ``block_migration`` (None: ``"auto"``)
        and whether a named host bypasses the scheduler (always below 2.30,
        ``force`` up to 2.67, never from 2.68)
    """
    if not isinstance(args, dict):
        raise exc.NovaBadRequest("Invalid input for field/attribute "
                                 "os-migrateLive.")
    allowed = {"host", "block_migration"}
    if not call.mv_at_least(2, 25):
        allowed.add("disk_over_commit")
    if (2, 30) <= call.microversion <= (2, 67):
        allowed.add("force")
    extra = set(args) - allowed
    if extra:
        raise _unexpected(extra)
    required = ["block_migration", "host"]
    if not call.mv_at_least(2, 25):
        required.insert(1, "disk_over_commit")
    for key in required:
        if key not in args:
            raise exc.NovaBadRequest(f"Invalid input for field/attribute "
                                     f"os-migrateLive. '{key}' is a required "
                                     f"property")
    block = args["block_migration"]
    if not (call.mv_at_least(2, 25) and block == "auto"):
        block = _bool(block, "block_migration")
    else:
        block = None
    if "disk_over_commit" in args:
        _bool(args["disk_over_commit"], "disk_over_commit")
    force = not call.mv_at_least(2, 30)
    if "force" in args:
        force = _bool(args["force"], "force")
    host = args["host"]
    if host is not None and (not isinstance(host, str) or not host):
        raise exc.NovaBadRequest(f"Invalid input for field/attribute host. "
                                 f"Value: {host}.")
    return host, block, force


# -- hypervisors, server groups, availability zones ---------------------------

def list_hypervisors(call: Call, detail: bool = False):
    if not call.caller.is_admin:
        raise exc.NovaForbidden("Policy doesn't allow os_compute_api:"
                                "os-hypervisors:list to be performed.")
    views = []
    for host in call.backend.compute.list_hosts():
        uuids = call.mv_at_least(2, 53)
        service = host.service
        view = {"id": host.uuid if uuids else host.int_id,
                "hypervisor_hostname": host.name,
                "state": service.state, "status": service.status}
        if detail:
            view.update({
                "host_ip": "127.0.0.1", "hypervisor_type": "QEMU",
                "hypervisor_version": 8002000,
                "service": {"host": host.name,
                            "id": service.uuid if uuids else service.id,
                            "disabled_reason": service.disabled_reason}})
            if not call.mv_at_least(2, 88):
                view.update({
                    "vcpus": 8, "memory_mb": 16384, "local_gb": 100,
                    "vcpus_used": 0, "memory_mb_used": 512,
                    "local_gb_used": 0, "free_ram_mb": 15872,
                    "free_disk_gb": 100, "current_workload": 0,
                    "running_vms": call.backend.compute.running_vms(host),
                    "disk_available_least": 100,
                    # a JSON string until 2.27, an object from 2.28
                    "cpu_info": {} if call.mv_at_least(2, 28) else "{}"})
        views.append(view)
    return json_response({"hypervisors": views})


def list_hypervisors_detail(call: Call):
    return list_hypervisors(call, detail=True)


def _group_view(call: Call, group: ServerGroup) -> dict:
    view = {"id": group.id, "name": group.name, "members": group.members}
    if call.mv_at_least(2, 64):
        view.update({"policy": group.policies[0] if group.policies else None,
                     "rules": {}})
    else:
        # 2.64 dropped the (always empty) metadata along with policies.
        view.update({"policies": group.policies, "metadata": {}})
    if call.mv_at_least(2, 13):
        view.update({"project_id": group.project_id,
                     "user_id": group.user_id})
    return view


def list_server_groups(call: Call):
    return json_response({"server_groups": [
        _group_view(call, g)
        for g in call.backend.compute.list_server_groups(call.caller)]})


def create_server_group(call: Call):
    body = call.json(exc.NovaBadRequest).get("server_group") or {}
    if not body.get("name"):
        raise exc.NovaBadRequest("'name' is a required property")
    policies = ([body["policy"]] if "policy" in body
                else list(body.get("policies") or []))
    if not policies or policies[0] not in ("affinity", "anti-affinity",
                                           "soft-affinity",
                                           "soft-anti-affinity"):
        raise exc.NovaBadRequest("Invalid server group policy")
    group = call.backend.compute.create_server_group(
        call.caller, body["name"], policies)
    return json_response({"server_group": _group_view(call, group)})


def get_server_group(call: Call, group_id: str):
    return json_response({"server_group": _group_view(
        call, call.backend.compute.get_server_group(call.caller, group_id))})


def delete_server_group(call: Call, group_id: str):
    call.backend.compute.delete_server_group(call.caller, group_id)
    return empty_response(204)


def list_availability_zones(call: Call):
    return json_response({"availabilityZoneInfo": [
        {"zoneName": AVAILABILITY_ZONE, "zoneState": {"available": True},
         "hosts": None}]})


P = "/compute/v2.1"
ROUTES = (
    ("/compute", "GET", versions, True),
    (P, "GET", version_v21, True),
    (f"{P}/flavors", "GET", list_flavors, False),
    (f"{P}/flavors/detail", "GET", list_flavors_detail, False),
    (f"{P}/flavors/<flavor_id>", "GET", get_flavor, False),
    (f"{P}/os-keypairs", "GET", list_keypairs, False),
    (f"{P}/os-keypairs", "POST", create_keypair, False),
    (f"{P}/os-keypairs/<name>", "GET", get_keypair, False),
    (f"{P}/os-keypairs/<name>", "DELETE", delete_keypair, False),
    (f"{P}/servers", "GET", list_servers, False),
    (f"{P}/servers", "POST", create_server, False),
    (f"{P}/servers/detail", "GET", list_servers_detail, False),
    (f"{P}/servers/<server_id>", "GET", get_server, False),
    (f"{P}/servers/<server_id>", "DELETE", delete_server, False),
    (f"{P}/servers/<server_id>/action", "POST", server_action, False),
    (f"{P}/os-hypervisors", "GET", list_hypervisors, False),
    (f"{P}/os-hypervisors/detail", "GET", list_hypervisors_detail, False),
    (f"{P}/os-server-groups", "GET", list_server_groups, False),
    (f"{P}/os-server-groups", "POST", create_server_group, False),
    (f"{P}/os-server-groups/<group_id>", "GET", get_server_group, False),
    (f"{P}/os-server-groups/<group_id>", "DELETE", delete_server_group,
     False),
    (f"{P}/os-availability-zone", "GET", list_availability_zones, False),
)
