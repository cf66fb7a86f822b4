"""Admin-only endpoints of the devcloud itself (not an OpenStack API)."""

from __future__ import annotations

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.api.base import (Call, Service,
                                                     json_response)

SERVICE = Service(
    name="devcloud", prefix="/devcloud",
    not_found=lambda path: exc.KeystoneNotFound(f"No such resource: {path}"),
    method_not_allowed=lambda method: exc.KeystoneError(
        f"The method {method} is not allowed for this resource.", 405))


def _admin(call: Call) -> None:
    if not call.caller.is_admin:
        raise exc.KeystoneError("Admin role required.", 403)


def truth(call: Call):
    """Ground truth of every migration (CLOCK_BOOTTIME instants)."""
    _admin(call)
    return json_response({"clock": "CLOCK_BOOTTIME",
                          "migrations": call.extras["truth"].records()})


def info(call: Call):
    _admin(call)
    config = call.backend.config
    return json_response({
        "profile": call.extras["profile"], "seed": config.seed,
        "hypervisors": [h.name for h in call.backend.compute.list_hosts()],
        "ssh_port": config.ssh_port, "ssh_user": config.ssh_user,
        "floating_cidr": config.floating_cidr})


ROUTES = (
    ("/devcloud/truth", "GET", truth, False),
    ("/devcloud/info", "GET", info, False),
)
