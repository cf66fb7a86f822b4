"""Glance v2 contract with the real glanceclient."""

from __future__ import annotations

import requests
import pytest
from glanceclient import exc as glance_exc

from devcloud_helpers import clients
from rally_metadata_plugin.devcloud.model.common import new_id
from rally_metadata_plugin.devcloud.model.compute import Image


def test_cirros_is_small_enough_for_the_tiny_flavor(devcloud):
    alice = clients(devcloud, "alice")
    images = list(alice.glance().images.list(filters={"status": "active"}))
    assert "cirros" in [i.name for i in images]
    cirros = alice.glance().images.get(
        next(i.id for i in images if i.name == "cirros"))
    tiny = next(f for f in alice.nova().flavors.list() if f.name == "m1.tiny")
    assert cirros.size <= tiny.disk * 1024 ** 3
    assert (cirros.min_ram or 0) <= tiny.ram


def test_get_is_unwrapped_and_404(devcloud):
    c = clients(devcloud, "alice")
    image_id = next(iter(c.glance().images.list())).id
    body = c.session.get("/v2/images/" + image_id,
                         endpoint_filter={"service_type": "image"}).json()
    assert body["id"] == image_id
    with pytest.raises(glance_exc.HTTPNotFound):
        c.glance().images.get(new_id())


def test_paging_follows_next(devcloud_factory):
    cloud = devcloud_factory()
    for i in range(5):
        image = Image(new_id(), f"extra-{i}", size=1024,
                      created_at=f"2020-01-0{i + 1}T00:00:00Z")
        cloud.backend.images[image.id] = image
    glance = clients(cloud, "alice").glance()
    names = [i.name for i in glance.images.list(page_size=2)]
    assert len(names) == 6 and len(set(names)) == 6
    first = requests.get(cloud.base_url + "/image/v2/images?limit=2",
                         headers={"X-Auth-Token":
                                  clients(cloud, "alice").session.get_token()})
    assert first.json()["next"].startswith("/v2/images?marker=")


def test_schema(devcloud):
    c = clients(devcloud, "alice")
    schema = c.session.get("/v2/schemas/image",
                           endpoint_filter={"service_type": "image"}).json()
    assert schema["name"] == "image" and "size" in schema["properties"]
