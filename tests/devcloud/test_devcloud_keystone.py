"""Keystone v3 contract, with keystoneauth1 and raw HTTP."""

from __future__ import annotations

import requests
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
import pytest

from devcloud_helpers import clients


def test_unversioned_discovery_lists_only_v3(devcloud):
    response = requests.get(devcloud.auth_url)
    assert response.status_code == 300
    versions = response.json()["versions"]["values"]
    assert [v["id"] for v in versions] == ["v3.14"]
    assert versions[0]["status"] == "stable"
    versioned = requests.get(devcloud.auth_url + "/v3").json()["version"]
    assert versioned["id"] == "v3.14"


def test_password_token_has_what_clients_read(devcloud):
    body = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "admin", "password": "admin-pw",
                 "domain": {"name": "Default"}}}},
        "scope": {"project": {"name": "admin",
                              "domain": {"name": "Default"}}}}}
    response = requests.post(devcloud.auth_url + "/v3/auth/tokens",
                             json=body)
    assert response.status_code == 201
    assert response.headers["X-Subject-Token"]
    token = response.json()["token"]
    assert token["expires_at"]
    assert token["project"]["name"] == "admin"
    assert "admin" in [r["name"] for r in token["roles"]]
    catalog = {s["type"]: s for s in token["catalog"]}
    assert set(catalog) >= {"identity", "compute", "network", "image"}
    for service in catalog.values():
        assert service["name"]
        for endpoint in service["endpoints"]:
            assert endpoint["region_id"] == "RegionOne"
            assert endpoint["url"].startswith(devcloud.base_url)


def test_keystoneauth_session_and_catalog(devcloud):
    session = clients(devcloud, "alice").session
    assert session.get_token()
    access = session.auth.get_access(session)
    assert access.role_names and "admin" not in access.role_names
    url = session.get_endpoint(service_type="compute", interface="public",
                               region_name="RegionOne")
    assert url == devcloud.base_url + "/compute/v2.1"


def test_bad_password_and_foreign_project_are_401(devcloud):
    for user, password, project in (("alice", "wrong", "alice"),
                                    ("alice", "alice-pw", "bob")):
        session = ks_session.Session(auth=v3.Password(
            auth_url=devcloud.auth_url, username=user, password=password,
            project_name=project, user_domain_name="Default",
            project_domain_name="Default"))
        with pytest.raises(ks_exc.Unauthorized):
            session.get_token()


def test_api_calls_need_a_valid_token(devcloud):
    response = requests.get(devcloud.base_url + "/compute/v2.1/servers",
                            headers={"X-Auth-Token": "bogus"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 401
