"""Nova's migration records, aborts, instance actions, request ids and
version discovery, with the real novaclient at several microversions.

The expected field sets are those of tempest's response schemas
(``tempest/lib/api_schema/response/compute``).
"""

from __future__ import annotations

import re

import pytest
from novaclient import api_versions
from novaclient import exceptions as nova_exc

from devcloud_helpers import (boot_server, clients, host_of, quick_profile,
                              raw_request, wait_for)

MIGRATION_KEYS = {"id", "status", "instance_uuid", "source_node",
                  "source_compute", "dest_node", "dest_compute", "dest_host",
                  "old_instance_type_id", "new_instance_type_id",
                  "created_at", "updated_at"}
SERVER_MIGRATION_KEYS = {
    "id", "status", "server_uuid", "source_node", "source_compute",
    "dest_node", "dest_compute", "dest_host", "disk_processed_bytes",
    "disk_remaining_bytes", "disk_total_bytes", "memory_processed_bytes",
    "memory_remaining_bytes", "memory_total_bytes", "created_at",
    "updated_at"}
REQUEST_ID = re.compile(r"^req-[0-9a-f-]{36}$")
#: the order nova moves a live migration's record through
STATUS_ORDER = ["accepted", "queued", "preparing", "running",
                "post-migrating", "completed"]


def _added_keys(version: str) -> set[str]:
    """Fields both migration views gain with the microversion."""
    added = set()
    if api_versions.APIVersion(version) >= api_versions.APIVersion("2.59"):
        added.add("uuid")
    if api_versions.APIVersion(version) >= api_versions.APIVersion("2.80"):
        added |= {"user_id", "project_id"}
    return added


def _migrate(cloud, server_id: str, version: str = "2.96",
             block_migration="auto"):
    """Start a live migration; returns (admin client, source, request id)."""
    nova = clients(cloud, "admin").nova(version)
    source = host_of(nova, server_id)
    kwargs = ({"block_migration": block_migration, "disk_over_commit": False}
              if api_versions.APIVersion(version)
              < api_versions.APIVersion("2.25")
              else {"block_migration": block_migration})
    result = nova.servers.live_migrate(server_id, host=None, **kwargs)
    return nova, source, result.request_ids[0]


def _record(nova, server_id: str):
    (record,) = nova.migrations.list(instance_uuid=server_id)
    return record


def _wait_status(nova, server_id: str, status: str, timeout: float = 10):
    return wait_for(lambda: (lambda r: r if r.status == status else None)(
        _record(nova, server_id)), timeout=timeout, what=status)


@pytest.fixture
def slow_cloud(devcloud_factory):
    """Migrations that stay in pre-copy for 30 s (long enough to abort)."""
    return devcloud_factory(profile=quick_profile(precopy=(30, 30)))


# -- request ids and versions -------------------------------------------------

def test_every_nova_response_has_a_request_id(devcloud):
    alice = clients(devcloud, "alice")
    seen = set()
    for method, path, status in (("GET", "/flavors", 200),
                                 ("GET", "/no-such-thing", 404),
                                 ("GET", "/servers/nope", 404),
                                 ("POST", "/servers/nope/action", 400)):
        response = raw_request(alice, method, path, "2.96", json={})
        assert response.status_code == status
        rid = response.headers["x-openstack-request-id"]
        assert REQUEST_ID.match(rid)
        assert response.headers["x-compute-request-id"] == rid
        seen.add(rid)
    assert len(seen) == 4
    nova = alice.nova("2.1")
    assert REQUEST_ID.match(nova.flavors.list().request_ids[0])


@pytest.mark.parametrize("start", ["2.0", "2.1", "2.79"])
def test_novaclient_discovers_the_highest_microversion(devcloud, start):
    nova = clients(devcloud, "admin").nova(start)
    found = api_versions.discover_version(nova,
                                          api_versions.APIVersion("2.latest"))
    assert found == api_versions.APIVersion("2.96")
    current = nova.versions.get_current()
    assert (current.min_version, current.version) == ("2.1", "2.96")
    listed = {v.id: v for v in nova.versions.list()}
    assert listed["v2.1"].version == "2.96"


# -- os-migrations -------------------------------------------------------------

@pytest.mark.parametrize("version", ["2.1", "2.23", "2.59", "2.80", "2.96"])
def test_os_migrations_fields_per_microversion(devcloud, version):
    server_id = boot_server(devcloud, name=f"mig-{version.replace('.', '')}")
    nova, source, _ = _migrate(devcloud, server_id)
    _wait_status(nova, server_id, "completed")
    nova = clients(devcloud, "admin").nova(version)
    record = _record(nova, server_id).to_dict()
    expected = MIGRATION_KEYS | _added_keys(version)
    if api_versions.APIVersion(version) >= api_versions.APIVersion("2.23"):
        expected.add("migration_type")
        assert record["migration_type"] == "live-migration"
    assert set(record) == expected
    assert isinstance(record["id"], int)
    assert record["source_compute"] == source != record["dest_compute"]
    assert record["instance_uuid"] == server_id
    if "user_id" in record:
        admin = clients(devcloud, "admin")
        assert record["project_id"] == admin.project_id
    # filters
    assert nova.migrations.list(instance_uuid=server_id, status="completed")
    assert not nova.migrations.list(instance_uuid=server_id, status="error")
    assert nova.migrations.list(instance_uuid=server_id,
                                host=record["dest_compute"])
    assert nova.migrations.list(instance_uuid=server_id,
                                migration_type="live-migration")
    assert not nova.migrations.list(instance_uuid=server_id,
                                    migration_type="resize")
    with pytest.raises(nova_exc.Forbidden):
        clients(devcloud, "alice").nova(version).migrations.list()


def test_os_migrations_paging_from_259(devcloud_factory, tempest_lags_nova):
    devcloud = devcloud_factory()
    server_id = boot_server(devcloud, name="paged")
    admin = clients(devcloud, "admin")
    for _ in range(2):
        nova, _, _ = _migrate(devcloud, server_id)
        wait_for(lambda: nova.migrations.list(
            instance_uuid=server_id)[0].status == "completed",
            what="completed")
    nova = admin.nova("2.59")
    records = nova.migrations.list(instance_uuid=server_id)
    assert [r.id for r in records] == sorted((r.id for r in records),
                                             reverse=True)
    body = raw_request(admin, "GET",
                       f"/os-migrations?instance_uuid={server_id}&limit=1",
                       "2.59").json()
    assert [m["id"] for m in body["migrations"]] == [records[0].id]
    assert "marker=" + records[0].uuid in body["migrations_links"][0]["href"]
    rest = nova.migrations.list(instance_uuid=server_id,
                                marker=records[0].uuid)
    assert [r.id for r in rest] == [r.id for r in records[1:]]
    bad = raw_request(admin, "GET", "/os-migrations?marker=nope", "2.59")
    assert bad.status_code == 400


def test_record_moves_through_novas_statuses(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(
        precopy=(1.2, 1.2), precheck_seconds=0.3, prepare_seconds=0.3))
    server_id = boot_server(cloud, name="steps")
    nova, _, _ = _migrate(cloud, server_id)
    seen = []

    def finished():
        status = _record(nova, server_id).status
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == "completed"

    wait_for(finished, timeout=15, interval=0.02, what="completed")
    assert {"accepted", "preparing", "running", "completed"} <= set(seen)
    assert seen == sorted(seen, key=STATUS_ORDER.index)


# -- servers/{id}/migrations and aborts ---------------------------------------

# (not 2.59-2.61: tempest checks them with its 2.58 schema, without uuid)
@pytest.mark.parametrize("version", ["2.23", "2.65", "2.80"])
def test_server_migrations_in_progress_only(slow_cloud, version):
    server_id = boot_server(slow_cloud, name="inprogress")
    admin, source, _ = _migrate(slow_cloud, server_id)
    record = _wait_status(admin, server_id, "running")
    links = record.to_dict()["links"]
    assert links[0]["href"].endswith(
        f"/servers/{server_id}/migrations/{record.id}")
    nova = clients(slow_cloud, "admin").nova(version)
    (listed,) = nova.server_migrations.list(server_id)
    assert set(listed.to_dict()) == SERVER_MIGRATION_KEYS | _added_keys(
        version)
    assert (listed.id, listed.status, listed.source_compute) == (
        record.id, "running", source)
    shown = nova.server_migrations.get(server_id, record.id)
    assert shown.to_dict() == listed.to_dict()
    with pytest.raises(nova_exc.NotFound):
        nova.server_migrations.get(server_id, record.id + 100)
    with pytest.raises(nova_exc.Forbidden):
        clients(slow_cloud, "alice").nova(version).server_migrations.list(
            server_id)
    below = raw_request(clients(slow_cloud, "admin"), "GET",
                        f"/servers/{server_id}/migrations", "2.22")
    assert below.status_code == 404


def test_abort_stops_the_migration_on_its_source(slow_cloud):
    server_id = boot_server(slow_cloud, name="aborted")
    admin, source, request_id = _migrate(slow_cloud, server_id)
    record = _wait_status(admin, server_id, "running")
    nova = clients(slow_cloud, "admin").nova("2.24")
    result = nova.server_migrations.live_migration_abort(server_id, record.id)
    abort_request = result.request_ids[0]
    server = wait_for(lambda: (lambda s: s if s.status == "ACTIVE" else None)(
        nova.servers.get(server_id)), timeout=2, what="ACTIVE")
    assert getattr(server, "OS-EXT-SRV-ATTR:host") == source
    assert _record(admin, server_id).status == "cancelled"
    assert nova.server_migrations.list(server_id) == []
    with pytest.raises(nova_exc.NotFound):
        nova.server_migrations.get(server_id, record.id)
    with pytest.raises(nova_exc.Conflict):   # not migrating any more
        nova.server_migrations.live_migration_abort(server_id, record.id)
    (truth,) = slow_cloud.truth()
    assert truth["status"] == "cancelled" and truth["aborted_at"]
    assert truth["pause_start"] is None and truth["outage_start"] is None
    assert slow_cloud.backend.migrations.outages.get(server_id) is None
    assert '"status": "cancelled"' in slow_cloud.truth_path.read_text()
    actions = {a.action: a for a in admin.instance_action.list(server_id)}
    assert actions["live_migration_cancel"].request_id == abort_request
    cancel = admin.instance_action.get(server_id, abort_request)
    assert [(e["event"], e["result"]) for e in cancel.events] == [
        ("compute_live_migration_abort", "Success")]
    migration = admin.instance_action.get(server_id, request_id)
    assert {e["event"]: e["result"] for e in migration.events}[
        "compute_live_migration"] == "Success"
    # the server can be migrated again
    _migrate(slow_cloud, server_id)


def test_abort_rules_per_microversion(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(precopy=(30, 30),
                                                   prepare_seconds=30))
    server_id = boot_server(cloud, name="preparing")
    admin, source, _ = _migrate(cloud, server_id)
    record = _wait_status(admin, server_id, "preparing")
    user = clients(cloud, "admin")
    path = f"/servers/{server_id}/migrations/{record.id}"
    assert raw_request(user, "DELETE", path, "2.23").status_code == 404
    assert raw_request(user, "DELETE", f"/servers/{server_id}/migrations/999",
                       "2.24").status_code == 404
    refused = raw_request(user, "DELETE", path, "2.24")
    assert refused.status_code == 400
    assert refused.json()["badRequest"]["message"] == (
        f"Migration {record.id} state of instance {server_id} is preparing. "
        f"Cannot abort live migration while the migration is in this "
        f"state.")
    with pytest.raises(nova_exc.Forbidden):
        clients(cloud, "alice").nova("2.65").server_migrations \
            .live_migration_abort(server_id, record.id)
    clients(cloud, "admin").nova("2.65").server_migrations \
        .live_migration_abort(server_id, record.id)
    wait_for(lambda: _record(admin, server_id).status == "cancelled",
             timeout=2, what="cancelled")
    assert host_of(admin, server_id) == source
    assert admin.servers.get(server_id).status == "ACTIVE"


# -- instance actions ----------------------------------------------------------

EVENTS = ["conductor_live_migrate_instance",
          "compute_check_can_live_migrate_destination",
          "compute_check_can_live_migrate_source",
          "compute_pre_live_migration", "compute_live_migration",
          "compute_post_live_migration_at_destination"]


@pytest.mark.parametrize("version,user", [
    ("2.1", "admin"), ("2.1", "alice"), ("2.51", "alice"), ("2.58", "admin"),
    ("2.62", "alice"), ("2.62", "admin"), ("2.84", "admin"),
    ("2.96", "alice")])
def test_instance_action_of_a_live_migration(devcloud, version, user):
    server_id = boot_server(devcloud, name=f"act-{user}")
    admin, _, request_id = _migrate(devcloud, server_id)
    _wait_status(admin, server_id, "completed")
    nova = clients(devcloud, user).nova(version)
    (action,) = [a for a in nova.instance_action.list(server_id)
                 if a.action == "live-migration"]
    expected = {"action", "instance_uuid", "request_id", "user_id",
                "project_id", "start_time", "message"}
    if api_versions.APIVersion(version) >= api_versions.APIVersion("2.58"):
        expected.add("updated_at")
    assert set(action.to_dict()) == expected
    assert (action.request_id, action.message) == (request_id, None)
    shown = nova.instance_action.get(server_id, request_id).to_dict()
    events = shown.pop("events", None)
    assert set(shown) == expected
    if user != "admin" and version == "2.1":
        assert events is None       # events are admin-only below 2.51
        return
    assert [e["event"] for e in events] == EVENTS
    assert {e["result"] for e in events} == {"Success"}
    keys = {"event", "start_time", "finish_time", "result"}
    newer = api_versions.APIVersion(version)
    if user == "admin":
        keys.add("traceback")
    if newer >= api_versions.APIVersion("2.62"):
        keys.add("hostId")
        if user == "admin":
            keys.add("host")
    if user == "admin" and newer >= api_versions.APIVersion("2.84"):
        keys.add("details")
    assert all(set(e) == keys for e in events)
    with pytest.raises(nova_exc.NotFound):
        nova.instance_action.get(server_id, "req-nope")
