"""Keystone v3: discovery (v3 only, so rally picks v3) and password tokens.

Token bodies are built with keystoneauth1's own fixtures, so whatever the
client reads (``expires_at``, roles, catalog with ``region_id``) is in the
shape the client library itself defines.
"""

from __future__ import annotations

import uuid

from keystoneauth1 import fixture

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.api.base import (Call, Service,
                                                     empty_response,
                                                     json_response)
from rally_metadata_plugin.devcloud.model.identity import (
    DEFAULT_DOMAIN_ID, DEFAULT_DOMAIN_NAME, Token)

API_VERSION = "v3.14"

SERVICE = Service(
    name="keystone", prefix="/identity",
    not_found=lambda path: exc.KeystoneNotFound(
        f"The resource could not be found: {path}"),
    method_not_allowed=lambda method: exc.KeystoneError(
        f"The method {method} is not allowed for this resource.", 405))

#: (type, name, path under the base URL) of the catalog
CATALOG = (("identity", "keystone", "/identity"),
           ("compute", "nova", "/compute/v2.1"),
           ("network", "neutron", "/network"),
           ("image", "glance", "/image"))


def _role_id(name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"devcloud-role:{name}").hex


def versions(call: Call) -> object:
    """Unversioned discovery: only v3 is listed (rally takes the lowest)."""
    body = fixture.DiscoveryList(href=f"{call.base_url}/identity", v2=False,
                                 v3_id=API_VERSION, v3_status="stable")
    return json_response(body, status=300)


def version_v3(call: Call) -> object:
    body = fixture.V3Discovery(f"{call.base_url}/identity/v3/",
                               id=API_VERSION, status="stable")
    return json_response({"version": body})


def _check_domain(where: dict) -> None:
    domain = where.get("domain") or {}
    if domain and domain.get("id", DEFAULT_DOMAIN_ID) != DEFAULT_DOMAIN_ID \
            and domain.get("name") != DEFAULT_DOMAIN_NAME:
        raise exc.Unauthorized("Could not find domain: "
                               f"{domain.get('id') or domain.get('name')}.")


def issue_token(call: Call) -> object:
    body = call.json(exc.KeystoneBadRequest)
    auth = body.get("auth") or {}
    identity = auth.get("identity") or {}
    methods = identity.get("methods") or []
    project = ((auth.get("scope") or {}).get("project")) or {}
    _check_domain(project)
    if "password" in methods:
        user = (identity.get("password") or {}).get("user") or {}
        _check_domain(user)
        token = call.backend.identity.authenticate(
            user_name=user.get("name"), user_id=user.get("id"),
            password=user.get("password", ""),
            project_name=project.get("name"), project_id=project.get("id"))
    elif "token" in methods:
        token = call.backend.identity.rescope(
            (identity.get("token") or {}).get("id", ""),
            project.get("name"), project.get("id"))
    else:
        raise exc.Unauthorized(f"Unsupported auth methods: {methods}")
    return json_response(token_body(call, token, methods), status=201,
                         headers={"X-Subject-Token": token.id})


def token_body(call: Call, token: Token, methods: list[str]) -> dict:
    project = token.project
    body = fixture.V3Token(
        user_id=token.user.id, user_name=token.user.name,
        user_domain_id=DEFAULT_DOMAIN_ID, user_domain_name=DEFAULT_DOMAIN_NAME,
        methods=methods or ["password"],
        issued=token.issued_at.replace(tzinfo=None),
        expires=token.expires_at.replace(tzinfo=None),
        project_id=project.id if project else None,
        project_name=project.name if project else None,
        project_domain_id=DEFAULT_DOMAIN_ID if project else None,
        project_domain_name=DEFAULT_DOMAIN_NAME if project else None)
    if project is not None:
        for role in token.roles:
            body.add_role(name=role, id=_role_id(role))
        region = call.backend.config.region
        for service_type, name, path in CATALOG:
            service = body.add_service(service_type, name=name)
            url = call.base_url + path
            service.add_standard_endpoints(public=url, internal=url,
                                           admin=url, region=region)
    return body


def validate_token(call: Call) -> object:
    subject = call.request.headers.get("X-Subject-Token", "")
    try:
        token = call.backend.identity.validate_token(subject)
    except exc.Unauthorized:
        raise exc.TokenNotFound(subject)
    return json_response(token_body(call, token, ["password"]),
                         headers={"X-Subject-Token": token.id})


def revoke_token(call: Call) -> object:
    call.backend.identity.revoke_token(
        call.request.headers.get("X-Subject-Token", ""))
    return empty_response()


def get_project(call: Call, project_id: str) -> object:
    project = call.backend.identity.get_project(call.caller, project_id)
    return json_response({"project": {
        "id": project.id, "name": project.name,
        "domain_id": project.domain_id, "enabled": True,
        "description": "", "is_domain": False, "parent_id": "default"}})


def get_user(call: Call, user_id: str) -> object:
    user = call.backend.identity.get_user(call.caller, user_id)
    return json_response({"user": {
        "id": user.id, "name": user.name, "domain_id": user.domain_id,
        "enabled": True, "default_project_id": user.project_id}})


ROUTES = (
    ("/identity", "GET", versions, True),
    ("/identity/v3", "GET", version_v3, True),
    ("/identity/v3/auth/tokens", "POST", issue_token, True),
    ("/identity/v3/auth/tokens", "GET", validate_token, False),
    ("/identity/v3/auth/tokens", "HEAD", validate_token, False),
    ("/identity/v3/auth/tokens", "DELETE", revoke_token, False),
    ("/identity/v3/projects/<project_id>", "GET", get_project, False),
    ("/identity/v3/users/<user_id>", "GET", get_user, False),
)
