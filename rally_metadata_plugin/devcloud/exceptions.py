"""Errors raised by the cloud model, each knowing its service's wire format.

The model (:mod:`.model`) and the handlers (:mod:`.api`) raise these; the
HTTP layer only calls :meth:`ApiError.render`. As in moto, an error a client
tells apart (neutron's ``type``, a per-resource "not found") has its own
class, which words its message the way the real service does. The formats
are the ones the real clients parse:

* keystone and every 401: ``{"error": {"code", "title", "message"}}``;
* nova: ``{"<faultName>": {"message", "code"}}`` (novaclient reads the first
  value; rally parses ``marker [X] not found`` out of the message);
* neutron: ``{"NeutronError": {"type", "message", "detail"}}`` (neutronclient
  maps ``type`` to its exception classes, e.g. ``PortNotFoundClient``);
* glance: plain text, as glance's webob errors are.
"""

from __future__ import annotations

import json
from http import HTTPStatus


class ApiError(Exception):
    """Base: an HTTP status and a message."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def payload(self) -> dict:
        return {"error": {"code": self.status,
                          "title": HTTPStatus(self.status).phrase,
                          "message": self.message}}

    def render(self) -> tuple[int, str, bytes]:
        """Return ``(status, content_type, body)``."""
        return (self.status, "application/json",
                json.dumps(self.payload()).encode())


# -- keystone ---------------------------------------------------------------

class KeystoneError(ApiError):
    """Keystone-format error (also used for every 401)."""


class Unauthorized(KeystoneError):
    status = 401


class AuthenticationRequired(Unauthorized):
    """No token, a bad token, or bad credentials."""

    def __init__(self) -> None:
        super().__init__("The request you have made requires "
                         "authentication.")


class KeystoneNotFound(KeystoneError):
    status = 404


class ProjectNotFound(KeystoneNotFound):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"Could not find project: {project_id}.")


class UserNotFound(KeystoneNotFound):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"Could not find user: {user_id}.")


class TokenNotFound(KeystoneNotFound):
    def __init__(self, token_id: str) -> None:
        super().__init__(f"Could not find token: {token_id}.")


class KeystoneBadRequest(KeystoneError):
    status = 400


# -- nova -------------------------------------------------------------------

class NovaError(ApiError):
    """Nova-format error; ``fault`` is the top-level key nova uses."""

    fault = "computeFault"

    def payload(self) -> dict:
        return {self.fault: {"message": self.message, "code": self.status}}


class NovaBadRequest(NovaError):
    status = 400
    fault = "badRequest"


class NovaForbidden(NovaError):
    status = 403
    fault = "forbidden"


class NovaNotFound(NovaError):
    status = 404
    fault = "itemNotFound"


class NovaNotAcceptable(NovaError):
    status = 406
    fault = "notAcceptable"


class NovaConflict(NovaError):
    status = 409
    fault = "conflictingRequest"


class ServerNotFound(NovaNotFound):
    def __init__(self, server_id: str) -> None:
        super().__init__(f"Instance {server_id} could not be found.")


class FlavorNotFound(NovaNotFound):
    def __init__(self, flavor_id: str) -> None:
        super().__init__(f"Flavor {flavor_id} could not be found.")


class KeypairNotFound(NovaNotFound):
    def __init__(self, name: str, user_id: str) -> None:
        super().__init__(f"Keypair {name} not found for user {user_id}")


class ServerGroupNotFound(NovaNotFound):
    def __init__(self, group_id: str) -> None:
        super().__init__(f"Server group {group_id} could not be found.")


class InvalidKeypair(NovaBadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(f"Keypair data is invalid: {reason}")


class KeypairExists(NovaConflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"Key pair '{name}' already exists.")


class NoValidHost(NovaBadRequest):
    def __init__(self, reason: str = "") -> None:
        super().__init__(f"No valid host was found. {reason}")


class MarkerNotFound(NovaBadRequest):
    def __init__(self, marker: str) -> None:
        # rally's list_servers() matches this exact text
        super().__init__(f"marker [{marker}] not found")


class InstanceInvalidState(NovaConflict):
    def __init__(self, server_id: str, state: str, action: str) -> None:
        super().__init__(
            f"Cannot '{action}' instance {server_id} while it is in "
            f"vm_state {state}")


class MigrationNotFoundForInstance(NovaNotFound):
    def __init__(self, migration_id, server_id: str) -> None:
        super().__init__(f"Migration {migration_id} not found for instance "
                         f"{server_id}")


class InvalidMigrationState(NovaBadRequest):
    def __init__(self, migration_id, server_id: str, state: str,
                 method: str) -> None:
        super().__init__(
            f"Migration {migration_id} state of instance {server_id} is "
            f"{state}. Cannot {method} while the migration is in this state.")


class ServiceNotFound(NovaNotFound):
    def __init__(self, service_id: str) -> None:
        super().__init__(f"Service {service_id} could not be found.")


class ActionNotFound(NovaNotFound):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"Action {request_id} not found")


# -- neutron ----------------------------------------------------------------

class NeutronError(ApiError):
    """Neutron-format error; ``type`` selects neutronclient's exception."""

    type = "NeutronError"

    def __init__(self, message: str, status: int | None = None,
                 type: str | None = None) -> None:
        super().__init__(message, status)
        if type is not None:
            self.type = type

    def payload(self) -> dict:
        return {"NeutronError": {"type": self.type, "message": self.message,
                                 "detail": ""}}


class NeutronNotFound(NeutronError):
    """``<kind> <id> could not be found``; ``kind`` is neutron's class name
    (its type ``<kind>NotFound`` selects e.g. ``PortNotFoundClient``)."""

    status = 404
    kind = "Resource"

    def __init__(self, resource_id: str) -> None:
        super().__init__(f"{self.kind} {resource_id} could not be found.",
                         type=f"{self.kind}NotFound")


class NetworkNotFound(NeutronNotFound):
    kind = "Network"


class SubnetNotFound(NeutronNotFound):
    kind = "Subnet"


class PortNotFound(NeutronNotFound):
    kind = "Port"


class RouterNotFound(NeutronNotFound):
    kind = "Router"


class RouterInterfaceNotFound(NeutronNotFound):
    kind = "RouterInterface"


class FloatingIPNotFound(NeutronNotFound):
    kind = "FloatingIP"


class SecurityGroupNotFound(NeutronNotFound):
    kind = "SecurityGroup"


class SecurityGroupRuleNotFound(NeutronNotFound):
    kind = "SecurityGroupRule"


class ExternalGatewayForFloatingIPNotFound(NeutronError):
    status = 404
    type = "ExternalGatewayForFloatingIPNotFound"

    def __init__(self, network_id: str, subnet_id: str,
                 port_id: str) -> None:
        super().__init__(
            f"External network {network_id} is not reachable from subnet "
            f"{subnet_id}.  Therefore, cannot associate Port {port_id} with "
            f"a Floating IP.")


class NeutronBadRequest(NeutronError):
    status = 400
    type = "BadRequest"


class NotAnExternalNetwork(NeutronBadRequest):
    def __init__(self, network_id: str) -> None:
        super().__init__(f"Network {network_id} is not a valid external "
                         f"network")


class NeutronForbidden(NeutronError):
    status = 403
    type = "Forbidden"


class NeutronConflict(NeutronError):
    status = 409
    type = "Conflict"


class NetworkInUse(NeutronConflict):
    type = "NetworkInUse"

    def __init__(self, network_id: str) -> None:
        super().__init__(
            f"Unable to complete operation on network {network_id}. There "
            f"are one or more ports still in use on the network.")


class SubnetInUse(NeutronConflict):
    type = "SubnetInUse"

    def __init__(self, subnet_id: str) -> None:
        super().__init__(
            f"Unable to complete operation on subnet {subnet_id}: One or "
            f"more ports have an IP allocation from this subnet.")


class PortInUse(NeutronConflict):
    type = "PortInUse"

    def __init__(self, port_id: str) -> None:
        super().__init__(f"Port {port_id} is in use")


class L3PortInUse(NeutronConflict):
    type = "L3PortInUse"

    def __init__(self, port_id: str, device_owner: str) -> None:
        super().__init__(f"Port {port_id} cannot be deleted directly via the "
                         f"port API: has device owner {device_owner}.")


class IpAddressGenerationFailure(NeutronConflict):
    type = "IpAddressGenerationFailure"

    def __init__(self, network_id: str) -> None:
        super().__init__(f"No more IP addresses available on network "
                         f"{network_id}.")


class IpAddressAlreadyAllocated(NeutronConflict):
    type = "IpAddressAlreadyAllocated"

    def __init__(self, address: str, subnet_id: str | None = None) -> None:
        where = f" in subnet {subnet_id}" if subnet_id else ""
        super().__init__(f"IP address {address} already allocated{where}")


class RouterInUse(NeutronConflict):
    type = "RouterInUse"

    def __init__(self, router_id: str, still_has: str) -> None:
        super().__init__(f"Router {router_id} still has {still_has}")


class RouterInterfaceInUseByFloatingIP(NeutronConflict):
    type = "RouterInterfaceInUseByFloatingIP"

    def __init__(self, router_id: str) -> None:
        super().__init__(
            f"Router interface for subnet on router {router_id} cannot be "
            f"deleted, as it is required by one or more floating IPs.")


class FloatingIPPortAlreadyAssociated(NeutronConflict):
    type = "FloatingIPPortAlreadyAssociated"

    def __init__(self, address: str, port_id: str, fixed_ip: str) -> None:
        super().__init__(
            f"Cannot associate floating IP {address} with port {port_id} "
            f"using fixed IP {fixed_ip}, as that fixed IP already has a "
            f"floating IP.")


class SecurityGroupDefaultAlreadyExists(NeutronConflict):
    type = "SecurityGroupDefaultAlreadyExists"

    def __init__(self) -> None:
        super().__init__("Default security group already exists.")


class SecurityGroupCannotRemoveDefault(NeutronConflict):
    type = "SecurityGroupCannotRemoveDefault"

    def __init__(self) -> None:
        super().__init__("Insufficient rights for removing default security "
                         "group.")


class SecurityGroupInUse(NeutronConflict):
    type = "SecurityGroupInUse"

    def __init__(self, group_id: str) -> None:
        super().__init__(f"Security Group {group_id} in use.")


class SecurityGroupRuleExists(NeutronConflict):
    type = "SecurityGroupRuleExists"

    def __init__(self) -> None:
        super().__init__("Security group rule already exists.")


# -- glance -----------------------------------------------------------------

class GlanceError(ApiError):
    """Glance answers errors as plain text."""

    def render(self) -> tuple[int, str, bytes]:
        phrase = HTTPStatus(self.status).phrase
        body = f"{self.status} {phrase}\n\n{self.message}\n\n"
        return self.status, "text/plain; charset=UTF-8", body.encode()


class GlanceNotFound(GlanceError):
    status = 404


class ImageNotFound(GlanceNotFound):
    def __init__(self, image_id: str) -> None:
        super().__init__(f"No image found with ID {image_id}")


class GlanceBadRequest(GlanceError):
    status = 400
