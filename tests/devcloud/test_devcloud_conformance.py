"""The devcloud's Nova held to upstream's own response schemas (tempest's).

Every devcloud of the session runs the conformance checker (see
``conftest.py``): this module tests the checker itself, drives the main
Nova calls at the microversions the workload and its clients use, and,
after every other test of the session, judges the whole session's log.
"""

from __future__ import annotations

import json
import time

import pytest
from novaclient import exceptions as nova_exc

from devcloud_helpers import clients, ensure_network, wait_for
from rally_metadata_plugin.devcloud import keys
from rally_metadata_plugin.devcloud.api import conformance

#: 2.1: rally's default without api_info; 2.24/2.25: the os-migrateLive
#: body changes; 2.30: host with force; 2.53: hypervisor uuids; 2.79: the
#: devcloud's env.json; 2.90 and 2.96: newest views the devcloud serves
MICROVERSIONS = ["2.1", "2.24", "2.25", "2.30", "2.53", "2.79", "2.90", "2.96"]


# -- the checker itself -------------------------------------------------------------

def _exchange(method, path, status, body, version=None, request=b"",
              served=True):
    headers = {"user-agent": "test"}
    response_headers = [("Content-Type", "application/json")]
    if version:
        headers["openstack-api-version"] = f"compute {version}"
        response_headers += [("OpenStack-API-Version", f"compute {version}"),
                             ("X-OpenStack-Nova-API-Version", version)]
    return conformance.Exchange(
        method=method, path=path, query="", request_headers=headers,
        request_body=request, status=status,
        response_headers=response_headers,
        response_body=json.dumps(body).encode() if body is not None else b"",
        served=served)


@pytest.fixture(scope="module")
def checker():
    return conformance.Checker()


def test_checker_accepts_a_conformant_response(checker):
    body = {"keypairs": [{"keypair": {"name": "k", "public_key": "ssh-rsa A",
                                      "fingerprint": "f", "type": "ssh"}}]}
    record = checker.check(_exchange("GET", "/compute/v2.1/os-keypairs", 200,
                                     body, "2.2"))
    assert (record.outcome, record.route, record.microversion) == (
        "ok", "/os-keypairs", "2.2")
    assert record.client == "KeyPairsClient.list_keypairs"
    assert record.schema == "v2_2.keypairs.list_keypairs"


def test_checker_lists_every_schema_error_of_a_body(checker):
    body = {"keypairs": [{"keypair": {"name": "k", "fingerprint": "f"}}]}
    record = checker.check(_exchange("GET", "/compute/v2.1/os-keypairs", 200,
                                     body, "2.2"))
    assert record.outcome == "violation"
    assert record.messages == [
        "keypairs/*/keypair: 'public_key' is a required property",
        "keypairs/*/keypair: 'type' is a required property"]


def test_checker_judges_the_status_and_the_echoed_microversion(checker):
    record = checker.check(_exchange("DELETE", "/compute/v2.1/os-keypairs/k",
                                     202, None, "2.2"))
    assert record.outcome == "violation"
    assert "202" in record.messages[0] and "204" in record.messages[0]
    exchange = _exchange("GET", "/compute/v2.1/os-keypairs", 200,
                         {"keypairs": []}, "2.2")
    exchange.response_headers = [("Content-Type", "application/json")]
    record = checker.check(exchange)
    assert record.outcome == "violation"
    assert "does not match in response" in record.messages[0]


def test_checker_picks_the_server_action_by_the_body(checker):
    record = checker.check(_exchange(
        "POST", "/compute/v2.1/servers/abc/action", 202, None, "2.79",
        request=b'{"os-migrateLive": {"host": null, '
                b'"block_migration": "auto"}}'))
    assert (record.outcome, record.route, record.client) == (
        "ok", "/servers/<id>/action os-migrateLive",
        "ServersClient.live_migrate_server")


def test_checker_counts_what_it_cannot_check(checker):
    error = checker.check(_exchange(
        "GET", "/compute/v2.1/servers/abc", 404,
        {"itemNotFound": {"code": 404, "message": "gone"}}, "2.79"))
    assert (error.outcome, error.messages) == ("error", ["NotFound: gone"])
    unmapped = checker.check(_exchange(
        "GET", "/compute/v2.1/os-networks", 200, {"networks": []}))
    assert (unmapped.outcome, unmapped.microversion) == ("unchecked", "2.1")
    unserved = checker.check(_exchange(
        "GET", "/compute/v2.1/os-migrations", 404,
        {"itemNotFound": {"code": 404, "message": "nope"}}, served=False))
    assert (unserved.outcome, unserved.route) == ("unserved",
                                                  "/os-migrations")


def test_hypervisors_past_2_88_are_held_to_the_2_53_schema_less_removals(
        checker):
    hypervisor = {"id": "5b3a1f56-1e0c-4c6e-9f4e-0c1f6b1f9a10",
                  "hypervisor_hostname": "h", "state": "up",
                  "status": "enabled", "host_ip": "127.0.0.1",
                  "hypervisor_type": "QEMU", "hypervisor_version": 1,
                  "service": {"host": "h", "id": "x",
                              "disabled_reason": None}}
    body = {"hypervisors": [hypervisor]}
    path = "/compute/v2.1/os-hypervisors/detail"
    assert checker.check(_exchange("GET", path, 200, body, "2.88")
                         ).outcome == "ok"
    record = checker.check(_exchange("GET", path, 200, body, "2.87"))
    assert record.outcome == "violation"
    assert "hypervisors/*: 'vcpus' is a required property" in record.messages
    stale = {"hypervisors": [dict(hypervisor, vcpus=8)]}
    record = checker.check(_exchange("GET", path, 200, stale, "2.88"))
    assert record.outcome == "violation"
    assert "'vcpus' was unexpected" in record.messages[0]


def test_requested_microversion_reads_both_headers():
    read = conformance.requested_microversion
    assert read({}) is None
    assert read({"x-openstack-nova-api-version": "2.25"}) == "2.25"
    assert read({"openstack-api-version": "volume 3.1, compute 2.53"}) == \
        "2.53"


# -- the main calls at each microversion ---------------------------------------------

def _new_records(log, offset: int, cloud) -> list[dict]:
    with open(log, "rb") as f:
        f.seek(offset)
        lines = f.read().decode().splitlines()
    return [r for r in map(json.loads, filter(None, lines))
            if r["devcloud"] == str(cloud.state_dir)]


def _live_migrate(nova, server, version: str, target: str) -> None:
    mv = tuple(int(p) for p in version.split("."))
    if mv < (2, 25):
        nova.servers.live_migrate(server, None, False, False)
    elif mv < (2, 30):
        nova.servers.live_migrate(server, None, "auto")
    else:            # a named host (with force up to 2.67)
        nova.servers.live_migrate(server, target, "auto")


@pytest.mark.parametrize("version", MICROVERSIONS)
def test_main_nova_calls_at_microversion(devcloud, nova_conformance_log,
                                         version):
    log = nova_conformance_log
    offset = log.stat().st_size if log.exists() else 0
    mv = tuple(int(p) for p in version.split("."))
    alice, admin = clients(devcloud, "alice"), clients(devcloud, "admin")
    nova, nova_admin = alice.nova(version), admin.nova(version)
    net_id = ensure_network(alice)
    image = next(iter(alice.glance().images.list()))

    nova.versions.list()
    flavors = nova.flavors.list()
    nova.flavors.list(detailed=False)
    nova.flavors.get(flavors[0].id)
    nova.availability_zones.list(detailed=False)

    name = f"key-{version}"
    private, public = keys.generate_rsa_keypair()
    if mv >= (2, 92):
        nova.keypairs.create(name, public)
    else:
        nova.keypairs.create(name)
    nova.keypairs.list()
    nova.keypairs.get(name)

    policy = "anti-affinity"
    group = (nova.server_groups.create(f"g-{version}", policy) if mv >= (2, 64)
             else nova.server_groups.create(f"g-{version}", [policy]))
    nova.server_groups.get(group.id)
    nova.server_groups.list()

    nics = [{"net-id": net_id}]
    server = nova.servers.create(f"vm-{version}", image.id, flavors[0].id,
                                 key_name=name, nics=nics)
    wait_for(lambda: nova.servers.get(server.id).status == "ACTIVE",
             what="ACTIVE")
    nova.servers.list()
    nova.servers.list(detailed=False)
    nova_admin.servers.list(search_opts={"all_tenants": 1})
    nova.servers.get_console_output(server)

    nova_admin.hypervisors.list()
    nova_admin.hypervisors.list(detailed=False)
    source = getattr(nova_admin.servers.get(server.id),
                     "OS-EXT-SRV-ATTR:host")
    target = next(h for h in (s.hypervisor_hostname
                              for s in nova_admin.hypervisors.list())
                  if h != source)
    _live_migrate(nova_admin, server, version, target)

    def migrated():
        s = nova_admin.servers.get(server.id)
        return (s.status == "ACTIVE"
                and getattr(s, "OS-EXT-SRV-ATTR:host") != source)
    wait_for(migrated, timeout=30, what="migrated")
    assert getattr(nova_admin.servers.get(server.id),
                   "OS-EXT-SRV-ATTR:host") == target

    nova.servers.delete(server)

    def gone():
        try:
            nova.servers.get(server.id)
        except nova_exc.NotFound:
            return True
    wait_for(gone, what="deleted")
    nova.server_groups.delete(group.id)
    nova.keypairs.delete(name)

    time.sleep(0.1)
    records = _new_records(log, offset, devcloud)
    assert {r["microversion"] for r in records
            if r["route"] not in ("/compute", "/compute/v2.1")} == {version}
    summary = conformance.summarize(records)
    print(conformance.format_summary(summary))
    assert summary.checked >= 20
    assert not summary.violations, conformance.format_summary(summary)


# -- the whole session's verdict (runs last) ----------------------------------------

from conformance_report import \
    test_every_nova_response_of_the_session_conforms  # noqa: E402,F401
