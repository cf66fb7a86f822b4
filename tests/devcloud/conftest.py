"""Fixtures of the devcloud tests: in-process devclouds."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from devcloud_helpers import make_config, quick_profile
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud.cloud import DevCloud

# the devcloud lives on loopback: a proxy from the CI environment must not
# carry the clients' requests (nor rally's, which inherit this environment)
for _var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY",
             "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_var, None)


@pytest.fixture
def devcloud_factory(tmp_path_factory) -> Iterator[Callable[..., DevCloud]]:
    """Start devclouds with config overrides; all are stopped at teardown."""
    started: list[DevCloud] = []

    def start(**overrides) -> DevCloud:
        config = make_config(tmp_path_factory.mktemp("devcloud"), **overrides)
        cloud = DevCloud(config).start()
        started.append(cloud)
        return cloud

    yield start
    for cloud in started:
        cloud.stop()


@pytest.fixture(scope="module")
def devcloud(tmp_path_factory) -> Iterator[DevCloud]:
    """One healthy devcloud per test module."""
    cloud = DevCloud(make_config(tmp_path_factory.mktemp("devcloud"),
                                 profile=quick_profile(FaultKind.REFUSED,
                                                       outage=(0.3, 0.3))))
    with cloud:
        yield cloud


@pytest.fixture(scope="session", autouse=True)
def _check_nova_conformance(nova_conformance_log):
    """Every devcloud of the session checks Nova against tempest's schemas."""
    return nova_conformance_log


@pytest.fixture
def tempest_lags_nova(monkeypatch):
    """Devclouds this test starts do not check Nova against tempest's
    schemas: the test drives responses that are nova's own (its schemas in
    nova/api/openstack/compute/schemas/) where tempest's lag behind, e.g.
    ``migrations_links`` of ``GET /os-migrations`` from 2.59 (tempest's
    schema forbids it), and the pre-2.53 ``PUT /os-services/{action}``
    (tempest's services client maps it to the 2.53 update)."""
    from rally_metadata_plugin.devcloud.api import conformance

    monkeypatch.delenv(conformance.ENV_VAR, raising=False)
