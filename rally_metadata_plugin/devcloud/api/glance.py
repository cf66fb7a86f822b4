"""Glance v2: image list (with ``next`` paging), show (unwrapped), schemas."""

from __future__ import annotations

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.api.base import (Call, Service,
                                                     json_response)
from rally_metadata_plugin.devcloud.model.compute import Image

SERVICE = Service(
    name="glance", prefix="/image",
    not_found=lambda path: exc.GlanceNotFound(
        "The resource could not be found."),
    method_not_allowed=lambda method: exc.GlanceError(
        f"The method {method} is not allowed for this resource.", 405))

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
FILTERS = ("name", "status", "visibility", "disk_format", "container_format",
           "owner")

#: enough of glance's image schema for glanceclient's model classes
IMAGE_PROPERTIES = {
    "id": {"type": "string"}, "name": {"type": ["null", "string"]},
    "status": {"type": "string"}, "visibility": {"type": "string"},
    "size": {"type": ["null", "integer"]},
    "virtual_size": {"type": ["null", "integer"]},
    "min_ram": {"type": "integer"}, "min_disk": {"type": "integer"},
    "disk_format": {"type": ["null", "string"]},
    "container_format": {"type": ["null", "string"]},
    "owner": {"type": ["null", "string"]},
    "checksum": {"type": ["null", "string"]},
    "protected": {"type": "boolean"}, "tags": {"type": "array"},
    "created_at": {"type": "string"}, "updated_at": {"type": "string"},
    "self": {"type": "string"}, "file": {"type": "string"},
    "schema": {"type": "string"}, "os_hidden": {"type": "boolean"},
}


def image_view(image: Image) -> dict:
    return {"id": image.id, "name": image.name, "status": image.status,
            "visibility": image.visibility, "size": image.size,
            "virtual_size": None, "min_ram": image.min_ram,
            "min_disk": image.min_disk, "disk_format": image.disk_format,
            "container_format": image.container_format,
            "owner": image.owner, "checksum": None, "protected": False,
            "os_hidden": False, "tags": [], "created_at": image.created_at,
            "updated_at": image.created_at,
            "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image"}


def versions(call: Call):
    return json_response({"versions": [{
        "id": "v2.16", "status": "CURRENT",
        "links": [{"rel": "self", "href": f"{call.base_url}/image/v2/"}]}]},
        status=300)


def list_images(call: Call):
    args = call.request.args
    try:
        limit = min(int(args.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
    except ValueError:
        raise exc.GlanceBadRequest("limit param must be an integer")
    images = call.backend.compute.list_images()
    for field in FILTERS:
        if field in args:
            images = [i for i in images if str(getattr(i, field)) ==
                      args[field]]
    marker = args.get("marker")
    if marker is not None:
        ids = [i.id for i in images]
        if marker not in ids:
            raise exc.GlanceBadRequest(f"marker {marker} not found")
        images = images[ids.index(marker) + 1:]
    page = images[:limit]
    body = {"images": [image_view(i) for i in page],
            "first": f"/v2/images?limit={limit}",
            "schema": "/v2/schemas/images"}
    if len(images) > limit:
        body["next"] = f"/v2/images?marker={page[-1].id}&limit={limit}"
    return json_response(body)


def get_image(call: Call, image_id: str):
    # glance v2 returns the image unwrapped
    return json_response(image_view(
        call.backend.compute.get_image(image_id)))


def image_schema(call: Call):
    return json_response({"name": "image", "properties": IMAGE_PROPERTIES,
                          "additionalProperties": {"type": "string"},
                          "links": [{"rel": "self", "href": "{self}"}]})


def images_schema(call: Call):
    return json_response({"name": "images", "properties": {
        "images": {"type": "array", "items": {
            "name": "image", "properties": IMAGE_PROPERTIES}},
        "schema": {"type": "string"}, "first": {"type": "string"},
        "next": {"type": "string"}}})


ROUTES = (
    ("/image", "GET", versions, True),
    ("/image/v2/images", "GET", list_images, False),
    ("/image/v2/images/<image_id>", "GET", get_image, False),
    ("/image/v2/schemas/image", "GET", image_schema, False),
    ("/image/v2/schemas/images", "GET", images_schema, False),
)
