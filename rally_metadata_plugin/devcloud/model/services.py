"""Nova's services and compute hosts: which host the scheduler may use.

Each compute host (hypervisor) runs a ``nova-compute`` service; a controller
host runs ``nova-scheduler`` and ``nova-conductor``. A compute service is
*enabled* or *disabled* (an operator's choice, with an optional reason) and
*up* or *down* (down: it stopped reporting, or an operator forced it down).
The scheduler places and migrates servers only to hosts that are enabled and
up (nova's ComputeFilter); a forced live migration to a named host only
needs the host up (nova-conductor's ``_check_host_is_up``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model.common import (isotime, new_id,
                                                         utcnow)
from rally_metadata_plugin.devcloud.model.identity import Caller

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend

AVAILABILITY_ZONE = "nova"
#: nova's zone of the services that are not compute services
INTERNAL_ZONE = "internal"
CONTROLLER = "controller"


@dataclasses.dataclass
class Service:
    """A nova service record (``GET /os-services``)."""

    id: int
    uuid: str
    binary: str
    host: str
    zone: str
    updated_at: str
    disabled: bool = False
    disabled_reason: str | None = None
    forced_down: bool = False
    reporting: bool = True        # False: the service stopped reporting

    @property
    def status(self) -> str:
        return "disabled" if self.disabled else "enabled"

    @property
    def state(self) -> str:
        return "up" if self.reporting and not self.forced_down else "down"

    @property
    def usable(self) -> bool:
        """Whether the scheduler may send servers here."""
        return not self.disabled and self.state == "up"


@dataclasses.dataclass
class Host:
    """A hypervisor (compute node) and its ``nova-compute`` service."""

    name: str
    int_id: int
    uuid: str
    service: Service


class ServiceBackend:
    """Services and compute hosts (the lock is the cloud's)."""

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self.hosts: list[Host] = []
        self.services: list[Service] = []

    def seed(self, names: list[str], disabled: tuple[str, ...],
             down: tuple[str, ...], now: str) -> None:
        """Controller services, then one compute host per name."""
        for binary in ("nova-scheduler", "nova-conductor"):
            self._add(binary, CONTROLLER, INTERNAL_ZONE, now)
        for index, name in enumerate(names, start=1):
            service = self._add("nova-compute", name, AVAILABILITY_ZONE, now)
            service.disabled = name in disabled
            service.reporting = name not in down
            self.hosts.append(Host(name, index, new_id(), service))

    def _add(self, binary: str, host: str, zone: str, now: str) -> Service:
        service = Service(len(self.services) + 1, new_id(), binary, host,
                          zone, now)
        self.services.append(service)
        return service

    # -- hosts ----------------------------------------------------------------

    def list_hosts(self) -> list[Host]:
        with self._cloud.lock:
            return list(self.hosts)

    def get_host(self, name: str) -> Host | None:
        with self._cloud.lock:
            return next((h for h in self.hosts if h.name == name), None)

    def usable_hosts(self) -> list[Host]:
        """Hosts the scheduler may choose: enabled and up."""
        with self._cloud.lock:
            return [h for h in self.hosts if h.service.usable]

    # -- services -------------------------------------------------------------

    def list_services(self, caller: Caller, binary: str | None = None,
                      host: str | None = None) -> list[Service]:
        _require_admin(caller, "list")
        with self._cloud.lock:
            return [s for s in self.services
                    if (not binary or s.binary == binary)
                    and (not host or s.host == host)]

    def find_service(self, caller: Caller, *, service_id: str | None = None,
                     host: str | None = None,
                     binary: str | None = None) -> Service:
        """By uuid (2.53+), or by host and binary (the older actions)."""
        _require_admin(caller, "update")
        with self._cloud.lock:
            for service in self.services:
                if service_id is not None and service.uuid == service_id:
                    return service
                if service_id is None and (service.host, service.binary) == (
                        host, binary):
                    return service
        if service_id is not None:
            raise exc.ServiceNotFound(service_id)
        raise exc.NovaNotFound(f"Service {binary} on host {host} could not "
                               f"be found.")

    def update_service(self, service: Service, *,
                       disabled: bool | None = None,
                       disabled_reason: str | None = None,
                       forced_down: bool | None = None) -> Service:
        """Enable/disable (with a reason) or force down a compute service."""
        if service.binary != "nova-compute":
            raise exc.NovaBadRequest(
                f"Updating a {service.binary} service is not supported. Only "
                f"nova-compute services can be updated.")
        with self._cloud.lock:
            if disabled is not None:
                service.disabled = disabled
                service.disabled_reason = disabled_reason if disabled else None
            if forced_down is not None:
                service.forced_down = forced_down
            service.updated_at = isotime(utcnow())
            return service


def _require_admin(caller: Caller, what: str) -> None:
    if not caller.is_admin:
        raise exc.NovaForbidden(f"Policy doesn't allow os_compute_api:"
                                f"os-services:{what} to be performed.")
