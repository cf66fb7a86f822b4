"""Neutron v2.0: networks, subnets, ports, routers, floating IPs, security
groups and rules, extensions.

All collections share generic list/show/create/update/delete handlers driven
by :data:`COLLECTIONS`; a collection brings its view and its calls into the
model: functions that turn a request body into the typed arguments of one
backend method (the model never sees a wire key such as
``router:external``). Lists honour neutron's query filters (any field,
repeated = OR) and ``fields``; every view carries both ``tenant_id`` and
``project_id`` because rally's cleanup filters on ``tenant_id``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.api.base import (Call, Service,
                                                     empty_response,
                                                     json_response)
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.common import UNSET
from rally_metadata_plugin.devcloud.model.identity import Caller
from rally_metadata_plugin.devcloud.model.l3 import (ExternalGateway,
                                                     FloatingIP, Router)
from rally_metadata_plugin.devcloud.model.network import (FixedIP, Network,
                                                          Port, Subnet)
from rally_metadata_plugin.devcloud.model.security_groups import (
    SecurityGroup, SecurityGroupRule)

SERVICE = Service(
    name="neutron", prefix="/network",
    not_found=lambda path: exc.NeutronError(
        "The resource could not be found.", status=404, type="HTTPNotFound"),
    method_not_allowed=lambda method: exc.NeutronError(
        f"The method {method} is not allowed for this resource.", status=405,
        type="HTTPMethodNotAllowed"))

#: real neutron aliases; floating IPs come with "router" (l3)
EXTENSIONS = (
    ("security-group", "security-group", "The security groups extension."),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 "
     "forwarding between L2 Neutron networks and access to external "
     "networks via a NAT gateway (floating IPs)."),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode",
     "Extension of the router abstraction for specifying whether SNAT "
     "should occur on the external gateway"),
    ("external-net", "Neutron external network", "Adds external network "
     "attribute to network resource."),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to "
     "external application"),
    ("project-id", "project_id field enabled", "Extension that indicates "
     "that project_id field is enabled."),
    ("standard-attr-description", "standard-attr-description", "Extension "
     "to add descriptions to standard attributes"),
    ("fip-port-details", "Floating IP Port Details Extension", "Add "
     "port_details attribute to Floating IP resource"),
    ("port-security", "Port Security", "Provides port security"),
)

PAGING_ARGS = {"fields", "limit", "marker", "sort_key", "sort_dir",
               "page_reverse", "verbose"}


def _stamps(resource) -> dict:
    return {"created_at": resource.created_at,
            "updated_at": resource.created_at, "revision_number": 1,
            "tags": []}


def _owner(project_id: str) -> dict:
    return {"tenant_id": project_id, "project_id": project_id}


def _fixed_ip_view(ip: FixedIP) -> dict:
    return {"subnet_id": ip.subnet_id, "ip_address": ip.ip_address}


def network_view(backend: CloudBackend, n: Network) -> dict:
    return {"id": n.id, "name": n.name, **_owner(n.project_id),
            "status": "ACTIVE", "admin_state_up": True, "shared": n.shared,
            "router:external": n.external, "subnets": list(n.subnet_ids),
            "mtu": 1450, "description": n.description,
            "availability_zones": ["nova"], "port_security_enabled": True,
            "ipv4_address_scope": None, "ipv6_address_scope": None,
            **_stamps(n)}


def subnet_view(backend: CloudBackend, s: Subnet) -> dict:
    return {"id": s.id, "name": s.name, "network_id": s.network_id,
            **_owner(s.project_id), "cidr": s.cidr,
            "ip_version": s.ip_version, "gateway_ip": s.gateway_ip,
            "dns_nameservers": list(s.dns_nameservers),
            "allocation_pools": [{"start": pool.start, "end": pool.end}
                                 for pool in s.allocation_pools],
            "enable_dhcp": s.enable_dhcp, "host_routes": [],
            "ipv6_ra_mode": s.ipv6_ra_mode,
            "ipv6_address_mode": s.ipv6_address_mode,
            "subnetpool_id": None, "description": s.description,
            **_stamps(s)}


def port_view(backend: CloudBackend, p: Port) -> dict:
    return {"id": p.id, "name": p.name, "network_id": p.network_id,
            **_owner(p.project_id), "mac_address": p.mac_address,
            "fixed_ips": [_fixed_ip_view(ip) for ip in p.fixed_ips],
            "device_id": p.device_id, "device_owner": p.device_owner,
            "status": p.status, "admin_state_up": True,
            "security_groups": list(p.security_groups),
            "binding:host_id": p.host, "binding:vif_type": "ovs",
            "binding:vnic_type": "normal", "allowed_address_pairs": [],
            "extra_dhcp_opts": [], "port_security_enabled": True,
            "description": p.description, **_stamps(p)}


def router_view(backend: CloudBackend, r: Router) -> dict:
    gateway = None
    if r.gateway_network_id:
        gateway = {"network_id": r.gateway_network_id,
                   "enable_snat": r.enable_snat,
                   "external_fixed_ips": [_fixed_ip_view(ip)
                                          for ip in r.gateway_ips]}
    return {"id": r.id, "name": r.name, **_owner(r.project_id),
            "status": "ACTIVE", "admin_state_up": True,
            "external_gateway_info": gateway, "routes": [],
            "description": r.description, "availability_zones": ["nova"],
            "availability_zone_hints": [], **_stamps(r)}


def floatingip_view(backend: CloudBackend, f: FloatingIP) -> dict:
    details = None
    port = backend.network.find_port(f.port_id)
    if port is not None:
        details = {"name": port.name, "network_id": port.network_id,
                   "mac_address": port.mac_address, "status": port.status,
                   "device_id": port.device_id,
                   "device_owner": port.device_owner,
                   "admin_state_up": True}
    return {"id": f.id, **_owner(f.project_id),
            "floating_ip_address": f.address,
            "floating_network_id": f.network_id, "router_id": f.router_id,
            "port_id": f.port_id, "fixed_ip_address": f.fixed_ip_address,
            "status": f.status, "description": f.description,
            "port_details": details, "dns_domain": "", "dns_name": "",
            "port_forwardings": [], **_stamps(f)}


def rule_view(backend: CloudBackend, r: SecurityGroupRule) -> dict:
    return {"id": r.id, "security_group_id": r.security_group_id,
            **_owner(r.project_id), "direction": r.direction,
            "ethertype": r.ethertype, "protocol": r.protocol,
            "port_range_min": r.port_range_min,
            "port_range_max": r.port_range_max,
            "remote_ip_prefix": r.remote_ip_prefix,
            "remote_group_id": r.remote_group_id,
            "description": r.description, **_stamps(r)}


def security_group_view(backend: CloudBackend, g: SecurityGroup) -> dict:
    return {"id": g.id, "name": g.name, "description": g.description,
            **_owner(g.project_id), "stateful": True,
            "security_group_rules": [rule_view(backend, r) for r in g.rules],
            **_stamps(g)}


# -- from request bodies to the model's arguments -----------------------------

def _given(body: dict, *keys: str) -> dict:
    """The attributes of ``keys`` the body sets, as keyword arguments (a
    PUT changes only what it names)."""
    return {key: body[key] if key in body else UNSET for key in keys}


def _project(body: dict) -> str | None:
    """The project a create asks for (admins may name another)."""
    return body.get("project_id") or body.get("tenant_id")


def _gateway(info: dict | None) -> ExternalGateway | None:
    """``external_gateway_info``: None or no network means no gateway."""
    if not info or not info.get("network_id"):
        return None
    return ExternalGateway(info["network_id"],
                           bool(info.get("enable_snat", True)))


def create_network(backend: CloudBackend, caller: Caller,
                   body: dict) -> Network:
    return backend.network.create_network(
        caller, name=body.get("name", ""), project_id=_project(body),
        external=bool(body.get("router:external", False)),
        shared=bool(body.get("shared", False)),
        description=body.get("description", ""))


def create_subnet(backend: CloudBackend, caller: Caller,
                  body: dict) -> Subnet:
    return backend.network.create_subnet(
        caller, network_id=body.get("network_id", ""),
        cidr=body.get("cidr", ""),
        ip_version=(int(body["ip_version"]) if "ip_version" in body
                    else None),
        gateway_ip=body.get("gateway_ip", UNSET), name=body.get("name", ""),
        project_id=_project(body),
        dns_nameservers=list(body.get("dns_nameservers") or []),
        enable_dhcp=bool(body.get("enable_dhcp", True)),
        description=body.get("description", ""),
        ipv6_address_mode=body.get("ipv6_address_mode"),
        ipv6_ra_mode=body.get("ipv6_ra_mode"))


def create_port(backend: CloudBackend, caller: Caller, body: dict) -> Port:
    fixed = (body.get("fixed_ips") or [{}])[0]
    return backend.network.create_port(
        caller, network_id=body.get("network_id", ""),
        name=body.get("name", ""), project_id=_project(body),
        fixed_ip=fixed.get("ip_address"), subnet_id=fixed.get("subnet_id"),
        security_groups=body.get("security_groups"),
        device_id=body.get("device_id", ""),
        device_owner=body.get("device_owner", ""),
        description=body.get("description", ""))


def create_router(backend: CloudBackend, caller: Caller,
                  body: dict) -> Router:
    return backend.l3.create_router(
        caller, name=body.get("name", ""), project_id=_project(body),
        description=body.get("description", ""),
        gateway=_gateway(body.get("external_gateway_info")))


def update_router(backend: CloudBackend, caller: Caller, router_id: str,
                  body: dict) -> Router:
    gateway = (_gateway(body["external_gateway_info"])
               if "external_gateway_info" in body else UNSET)
    return backend.l3.update_router(caller, router_id, gateway=gateway,
                                    **_given(body, "name", "description"))


def create_floatingip(backend: CloudBackend, caller: Caller,
                      body: dict) -> FloatingIP:
    return backend.l3.create_floatingip(
        caller, network_id=body.get("floating_network_id", ""),
        project_id=_project(body),
        address=body.get("floating_ip_address"),
        port_id=body.get("port_id"),
        fixed_ip_address=body.get("fixed_ip_address"),
        description=body.get("description", ""))


def update_floatingip(backend: CloudBackend, caller: Caller, fip_id: str,
                      body: dict) -> FloatingIP:
    return backend.l3.update_floatingip(
        caller, fip_id, fixed_ip_address=body.get("fixed_ip_address"),
        **_given(body, "description", "port_id"))


def create_security_group(backend: CloudBackend, caller: Caller,
                          body: dict) -> SecurityGroup:
    return backend.security.create_security_group(
        caller, name=body.get("name", ""),
        description=body.get("description", ""), project_id=_project(body))


def create_security_group_rule(backend: CloudBackend, caller: Caller,
                               body: dict) -> SecurityGroupRule:
    return backend.security.create_security_group_rule(
        caller, security_group_id=body.get("security_group_id", ""),
        direction=body.get("direction"),
        ethertype=body.get("ethertype", "IPv4"),
        protocol=body.get("protocol"),
        port_range_min=body.get("port_range_min"),
        port_range_max=body.get("port_range_max"),
        remote_ip_prefix=body.get("remote_ip_prefix"),
        remote_group_id=body.get("remote_group_id"),
        description=body.get("description", ""))


@dataclasses.dataclass(frozen=True)
class Collection:
    """One neutron collection: its view and its calls into the model."""

    singular: str
    view: Callable[[CloudBackend, Any], dict]
    list: Callable[[CloudBackend, Caller], list]
    get: Callable[[CloudBackend, Caller, str], Any]
    create: Callable[[CloudBackend, Caller, dict], Any]
    update: Callable[[CloudBackend, Caller, str, dict], Any] | None
    delete: Callable[[CloudBackend, Caller, str], None]


COLLECTIONS = {
    "networks": Collection(
        "network", network_view,
        list=lambda b, c: b.network.list_networks(c),
        get=lambda b, c, i: b.network.get_network(c, i),
        create=create_network,
        update=lambda b, c, i, body: b.network.update_network(
            c, i, **_given(body, "name", "description")),
        delete=lambda b, c, i: b.network.delete_network(c, i)),
    "subnets": Collection(
        "subnet", subnet_view,
        list=lambda b, c: b.network.list_subnets(c),
        get=lambda b, c, i: b.network.get_subnet(c, i),
        create=create_subnet,
        update=lambda b, c, i, body: b.network.update_subnet(
            c, i, **_given(body, "name", "description", "dns_nameservers",
                           "enable_dhcp")),
        delete=lambda b, c, i: b.network.delete_subnet(c, i)),
    "ports": Collection(
        "port", port_view,
        list=lambda b, c: b.network.list_ports(c),
        get=lambda b, c, i: b.network.get_port(c, i),
        create=create_port,
        update=lambda b, c, i, body: b.network.update_port(
            c, i, **_given(body, "name", "description", "security_groups")),
        delete=lambda b, c, i: b.network.delete_port(c, i)),
    "routers": Collection(
        "router", router_view,
        list=lambda b, c: b.l3.list_routers(c),
        get=lambda b, c, i: b.l3.get_router(c, i),
        create=create_router, update=update_router,
        delete=lambda b, c, i: b.l3.delete_router(c, i)),
    "floatingips": Collection(
        "floatingip", floatingip_view,
        list=lambda b, c: b.l3.list_floatingips(c),
        get=lambda b, c, i: b.l3.get_floatingip(c, i),
        create=create_floatingip, update=update_floatingip,
        delete=lambda b, c, i: b.l3.delete_floatingip(c, i)),
    "security-groups": Collection(
        "security_group", security_group_view,
        list=lambda b, c: b.security.list_security_groups(c),
        get=lambda b, c, i: b.security.get_security_group(c, i),
        create=create_security_group,
        update=lambda b, c, i, body: b.security.update_security_group(
            c, i, **_given(body, "name", "description")),
        delete=lambda b, c, i: b.security.delete_security_group(c, i)),
    "security-group-rules": Collection(
        "security_group_rule", rule_view,
        list=lambda b, c: b.security.list_security_group_rules(c),
        get=lambda b, c, i: b.security.get_security_group_rule(c, i),
        create=create_security_group_rule, update=None,
        delete=lambda b, c, i: b.security.delete_security_group_rule(c, i)),
}


def _matches(value: Any, wanted: list[str], field: str) -> bool:
    if field == "fixed_ips" and isinstance(value, list):
        # e.g. fixed_ips=ip_address=10.0.0.3 or fixed_ips=subnet_id=...
        pairs = [w.split("=", 1) for w in wanted if "=" in w]
        return any(ip.get(k) == v for ip in value for k, v in pairs)
    if isinstance(value, bool):
        return any(w.lower() == str(value).lower() for w in wanted)
    if value is None:
        return any(w in ("", "None", "null") for w in wanted)
    if isinstance(value, (list, dict)):
        return False
    return str(value) in wanted


def _filter_and_project(call: Call, views: list[dict]) -> list[dict]:
    args = call.request.args
    filters = {k: args.getlist(k) for k in args if k not in PAGING_ARGS}
    views = [v for v in views
             if all(k in v and _matches(v[k], wanted, k)
                    for k, wanted in filters.items())]
    fields = args.getlist("fields")
    if fields:
        views = [{k: v[k] for k in fields if k in v} for v in views]
    return views


def list_collection(call: Call, collection: str):
    kind = COLLECTIONS[collection]
    backend = call.backend
    items = kind.list(backend, call.caller)
    views = [kind.view(backend, item) for item in items]
    return json_response({collection.replace("-", "_"):
                          _filter_and_project(call, views)})


def show(call: Call, collection: str, resource_id: str):
    kind = COLLECTIONS[collection]
    item = kind.get(call.backend, call.caller, resource_id)
    view = kind.view(call.backend, item)
    fields = call.request.args.getlist("fields")
    if fields:
        view = {k: view[k] for k in fields if k in view}
    return json_response({kind.singular: view})


def create(call: Call, collection: str):
    kind = COLLECTIONS[collection]
    body = call.json(exc.NeutronBadRequest)
    plural = collection.replace("-", "_")
    if plural in body and isinstance(body[plural], list):      # bulk
        items = [kind.create(call.backend, call.caller,
                             _dict(one, kind.singular))
                 for one in body[plural]]
        return json_response({plural: [kind.view(call.backend, i)
                                       for i in items]}, status=201)
    item = kind.create(call.backend, call.caller,
                       _dict(body.get(kind.singular), kind.singular))
    return json_response({kind.singular: kind.view(call.backend, item)},
                         status=201)


def update(call: Call, collection: str, resource_id: str):
    kind = COLLECTIONS[collection]
    if kind.update is None:
        raise SERVICE.method_not_allowed("PUT")
    body = _dict(call.json(exc.NeutronBadRequest).get(kind.singular),
                 kind.singular)
    item = kind.update(call.backend, call.caller, resource_id, body)
    return json_response({kind.singular: kind.view(call.backend, item)})


def delete(call: Call, collection: str, resource_id: str):
    kind = COLLECTIONS[collection]
    kind.delete(call.backend, call.caller, resource_id)
    return empty_response(204)


def _dict(value: Any, singular: str) -> dict:
    if not isinstance(value, dict):
        raise exc.NeutronBadRequest(f"Resource body required: {singular}")
    return value


def _interface_view(router: Router, port: Port) -> dict:
    subnet_ids = [ip.subnet_id for ip in port.fixed_ips]
    return {"id": router.id, **_owner(router.project_id),
            "port_id": port.id, "network_id": port.network_id,
            "subnet_id": subnet_ids[0] if subnet_ids else None,
            "subnet_ids": subnet_ids}


def add_router_interface(call: Call, router_id: str):
    body = call.json(exc.NeutronBadRequest)
    router, port = call.backend.l3.add_router_interface(
        call.caller, router_id, port_id=body.get("port_id"),
        subnet_id=body.get("subnet_id"))
    return json_response(_interface_view(router, port))


def remove_router_interface(call: Call, router_id: str):
    body = call.json(exc.NeutronBadRequest)
    router, port = call.backend.l3.remove_router_interface(
        call.caller, router_id, port_id=body.get("port_id"),
        subnet_id=body.get("subnet_id"))
    return json_response(_interface_view(router, port))


def _extension_view(alias: str, name: str, description: str) -> dict:
    return {"alias": alias, "name": name, "description": description,
            "updated": "2013-01-01T10:00:00-00:00", "links": []}


def list_extensions(call: Call):
    return json_response({"extensions": [_extension_view(*e)
                                         for e in EXTENSIONS]})


def show_extension(call: Call, alias: str):
    for extension in EXTENSIONS:
        if extension[0] == alias:
            return json_response({"extension": _extension_view(*extension)})
    raise exc.NeutronError(f"Extension with alias {alias} does not exist",
                           status=404, type="HTTPNotFound")


def versions(call: Call):
    return json_response({"versions": [{
        "id": "v2.0", "status": "CURRENT",
        "links": [{"rel": "self", "href": f"{call.base_url}/network/v2.0/"}]
    }]})


P = "/network/v2.0"
_ANY = "any(" + ", ".join(f"'{c}'" for c in COLLECTIONS) + ")"
ROUTES = (
    ("/network", "GET", versions, True),
    (f"{P}/extensions", "GET", list_extensions, False),
    (f"{P}/extensions/<alias>", "GET", show_extension, False),
    (f"{P}/<{_ANY}:collection>", "GET", list_collection, False),
    (f"{P}/<{_ANY}:collection>", "POST", create, False),
    (f"{P}/<{_ANY}:collection>/<resource_id>", "GET", show, False),
    (f"{P}/<{_ANY}:collection>/<resource_id>", "PUT", update, False),
    (f"{P}/<{_ANY}:collection>/<resource_id>", "DELETE", delete, False),
    (f"{P}/routers/<router_id>/add_router_interface", "PUT",
     add_router_interface, False),
    (f"{P}/routers/<router_id>/remove_router_interface", "PUT",
     remove_router_interface, False),
)
