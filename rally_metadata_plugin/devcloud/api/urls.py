"""The routing table: every service's ROUTES under one werkzeug Map."""

from __future__ import annotations

from werkzeug.routing import Map, Rule

from rally_metadata_plugin.devcloud.api import (devcloud, glance, keystone,
                                                neutron, nova, nova_admin)
from rally_metadata_plugin.devcloud.api.base import Endpoint, Service

SERVICES = (keystone, nova, nova_admin, neutron, glance, devcloud)


def url_map() -> Map:
    rules = []
    for module in SERVICES:
        for path, method, handler, public in module.ROUTES:
            methods = [method] + (["HEAD"] if method == "GET" else [])
            rules.append(Rule(path, methods=methods,
                              endpoint=Endpoint(module.SERVICE, handler,
                                                public)))
    # clients mix "/x" and "/x/": accept both without redirecting
    return Map(rules, strict_slashes=False, merge_slashes=False)


def service_for(path: str) -> Service | None:
    """The service owning a path prefix (to word errors of unrouted paths)."""
    for module in SERVICES:
        prefix = module.SERVICE.prefix
        if path == prefix or path.startswith(prefix + "/"):
            return module.SERVICE
    return None
