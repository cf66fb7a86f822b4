"""Errors raised by the cloud model, each knowing its service's wire format.

The model raises these; the HTTP layer only calls :meth:`ApiError.render`.
The formats are the ones the real clients parse:

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


class KeystoneNotFound(KeystoneError):
    status = 404


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


class MarkerNotFound(NovaBadRequest):
    def __init__(self, marker: str) -> None:
        # rally's list_servers() matches this exact text
        super().__init__(f"marker [{marker}] not found")


class InstanceInvalidState(NovaConflict):
    def __init__(self, server_id: str, state: str, action: str) -> None:
        super().__init__(
            f"Cannot '{action}' instance {server_id} while it is in "
            f"vm_state {state}")


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
    status = 404

    def __init__(self, kind: str, resource_id: str) -> None:
        """``kind`` is neutron's class name: Port, FloatingIP, Network..."""
        super().__init__(f"{kind} {resource_id} could not be found.",
                         type=f"{kind}NotFound")


class NeutronBadRequest(NeutronError):
    status = 400
    type = "BadRequest"


class NeutronConflict(NeutronError):
    status = 409
    type = "Conflict"


class NeutronForbidden(NeutronError):
    status = 403
    type = "Forbidden"


# -- glance -----------------------------------------------------------------

class GlanceError(ApiError):
    """Glance answers errors as plain text."""

    def render(self) -> tuple[int, str, bytes]:
        phrase = HTTPStatus(self.status).phrase
        body = f"{self.status} {phrase}\n\n{self.message}\n\n"
        return self.status, "text/plain; charset=UTF-8", body.encode()


class GlanceNotFound(GlanceError):
    status = 404


class GlanceBadRequest(GlanceError):
    status = 400
