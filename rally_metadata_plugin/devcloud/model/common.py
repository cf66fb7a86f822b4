"""What the parts of the model share: ids, timestamps, scoped lookups, the
owner of a new neutron resource and the marker of an argument a request
left out."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import TYPE_CHECKING, Callable, TypeVar

from rally_metadata_plugin.devcloud import exceptions as exc

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.identity import Caller

Resource = TypeVar("Resource")


def new_id() -> str:
    """A resource id as OpenStack prints them (a random UUID)."""
    return str(uuid.uuid4())


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def isotime(when: datetime.datetime) -> str:
    """The ``created_at`` / ``updated`` format of nova and neutron."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Unset(enum.Enum):
    """Type of :data:`UNSET`: an argument the request left out (``None``
    is a value a client may send, e.g. to clear a gateway)."""

    UNSET = "unset"


UNSET = Unset.UNSET


def apply_updates(resource: object, **fields: object) -> None:
    """Set every field of ``resource`` whose new value is not
    :data:`UNSET` (neutron's PUT semantics)."""
    for name, value in fields.items():
        if value is not UNSET:
            setattr(resource, name, value)


def lookup(table: dict[str, Resource], resource_id: str,
           visible: Callable[[Resource], bool],
           not_found: Callable[[str], Exception]) -> Resource:
    """``table[resource_id]`` if the caller may see it, else the service's
    "not found" (a resource one may not see does not exist for one)."""
    resource = table.get(resource_id)
    if resource is None or not visible(resource):
        raise not_found(resource_id)
    return resource


def owning_project(caller: Caller, requested: str | None) -> str:
    """The project a new neutron resource belongs to: admins may create
    resources for another project, others only for their own."""
    if requested and requested != caller.project_id:
        if not caller.is_admin:
            raise exc.NeutronForbidden(
                "Only admin can create resources for another project")
        return requested
    return caller.project_id
