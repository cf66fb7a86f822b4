"""Pre-checks that refuse a live migration (local disks without block
migration, the precheck-fail profile) as nova does per microversion, and the
scenario's client (``adapters.live_migration.LiveMigrator``) against them,
including the abort of a migration still running at its timeout."""

from __future__ import annotations

import random
import time

import pytest
from novaclient import exceptions as nova_exc

from devcloud_helpers import (boot_server, clients, host_of, quick_profile,
                              wait_for)
from rally_metadata_plugin.adapters.live_migration import (LiveMigrator,
                                                           MigrationError,
                                                           MigrationTimeout)
from rally_metadata_plugin.devcloud import profiles

SHARED_STORAGE = ("is not on shared storage: Shared storage live-migration "
                  "requires either shared storage or boot-from-volume with "
                  "no local disks.")
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


@pytest.fixture
def local_disks(devcloud_factory):
    return devcloud_factory(local_disks=True)


def _live_migrate(nova, server_id: str, block_migration):
    if nova.api_version.ver_minor < 25:
        return nova.servers.live_migrate(server_id, host=None,
                                         block_migration=block_migration,
                                         disk_over_commit=False)
    return nova.servers.live_migrate(server_id, host=None,
                                     block_migration=block_migration)


def _boot(cloud, name: str, version: str):
    """A server, an admin client at ``version`` and the server's host."""
    server_id = boot_server(cloud, name=name)
    nova = clients(cloud, "admin").nova(version)
    return server_id, nova, host_of(nova, server_id)


def _newest(nova, server_id: str):
    return max(nova.migrations.list(instance_uuid=server_id),
               key=lambda m: m.id)


def _failed_event(nova, server_id: str, request_id: str) -> dict:
    action = nova.instance_action.get(server_id, request_id)
    assert action.action == "live-migration" and action.message == "Error"
    (event,) = [e for e in action.events if e["result"] == "Error"]
    return event


def _migrator(cloud, version: str = "2.0", **kwargs) -> LiveMigrator:
    """The scenario's client: an admin client at ``version`` (2.0: rally's
    unpinned default) and a way to get one at another version."""
    admin = clients(cloud, "admin")
    kwargs.setdefault("timeout", 30)
    return LiveMigrator(admin.nova(version), client_at=admin.nova,
                        poll_interval=0.1, prepoll_delay=0.1, **kwargs)


def _migrate_with(migrator: LiveMigrator, server_id: str, block_migration):
    migrator.negotiate(block_migration)
    migrator.require_hypervisors(2)
    source = migrator.host_of(server_id)
    started = time.monotonic()
    migrator.request(server_id, block_migration)
    return migrator.wait_for_host_change(server_id, source, started), source


@pytest.mark.parametrize("version", ["2.1", "2.24", "2.25"])
def test_local_disks_refuse_shared_storage_at_once_below_234(local_disks,
                                                             version):
    server_id, nova, source = _boot(local_disks, f"sync-{version[-2:]}",
                                    version)
    with pytest.raises(nova_exc.BadRequest) as raised:
        _live_migrate(nova, server_id, False)
    assert raised.value.message == f"{source} {SHARED_STORAGE}"
    assert raised.value.code == 400
    server = nova.servers.get(server_id)
    assert (server.status, host_of(nova, server_id)) == ("ACTIVE", source)
    record = _newest(nova, server_id)
    assert record.status == "error"
    event = _failed_event(nova, server_id, raised.value.request_id)
    assert event["event"] == "conductor_migrate_server"
    assert event["traceback"].strip().endswith(
        f"nova.exception.InvalidSharedStorage: {source} {SHARED_STORAGE}")
    # a block migration ("auto" from 2.25) is fine on local disks
    _live_migrate(nova, server_id, "auto" if version == "2.25" else True)
    wait_for(lambda: nova.servers.get(server_id).status == "ACTIVE"
             and host_of(nova, server_id) != source, what="migrated")
    assert local_disks.truth()[-1]["block_migration"] is True


@pytest.mark.parametrize("version", ["2.34", "2.84", "2.96"])
def test_local_disks_fail_the_precheck_asynchronously_from_234(local_disks,
                                                               version):
    server_id, nova, source = _boot(local_disks, f"async-{version[-2:]}",
                                    version)
    started = time.monotonic()
    result = _live_migrate(nova, server_id, False)
    record = wait_for(lambda: (lambda r: r if r.status == "error" else None)(
        _newest(nova, server_id)), timeout=2, interval=0.01, what="error")
    assert time.monotonic() - started < 0.5
    server = nova.servers.get(server_id)
    assert (server.status, host_of(nova, server_id)) == ("ACTIVE", source)
    assert record.source_compute == source
    event = _failed_event(nova, server_id, result.request_ids[0])
    assert event["event"] == "conductor_live_migrate_instance"
    if version in ("2.84", "2.96"):
        assert event["details"] == f"{source} {SHARED_STORAGE}"
    else:
        assert "details" not in event
    (truth,) = local_disks.truth()
    assert truth["status"] == "error" and truth["fault"]["precheck"]
    assert truth["pause_start"] is None and truth["outage_start"] is None


def test_scenario_negotiates_and_migrates_on_local_disks(local_disks):
    """At rally's unpinned 2.0, "auto" needs the negotiated microversion."""
    server_id = boot_server(local_disks, name="negotiated")
    migrator = _migrator(local_disks)
    destination, source = _migrate_with(migrator, server_id, "auto")
    assert destination != source
    assert migrator.version == (2, 96)
    (truth,) = local_disks.truth()
    assert truth["status"] == "completed" and truth["block_migration"]


def test_scenario_reports_novas_shared_storage_reason(local_disks):
    server_id = boot_server(local_disks, name="shared")
    started = time.monotonic()
    with pytest.raises(MigrationError) as raised:
        _migrate_with(_migrator(local_disks), server_id, False)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "conductor_live_migrate_instance" in message
    assert SHARED_STORAGE in message and "(migration 1: error)" in message


@pytest.mark.parametrize("version", ["2.0", "2.79"])
def test_precheck_fail_profile(devcloud_factory, version):
    """Fast, server ACTIVE on its source, the reason in the instance action
    (details from 2.84, the traceback's last line below)."""
    cloud = devcloud_factory(profile="precheck-fail")
    server_id = boot_server(cloud, name="precheck")
    migrator = _migrator(cloud, version)
    started = time.monotonic()
    with pytest.raises(MigrationError, match="NoValidHost: " + NO_VALID_HOST
                       if version == "2.79" else NO_VALID_HOST):
        _migrate_with(migrator, server_id, "auto")
    assert time.monotonic() - started < 3
    nova = clients(cloud, "admin").nova("2.96")
    assert nova.servers.get(server_id).status == "ACTIVE"
    assert _newest(nova, server_id).status == "error"
    (truth,) = cloud.truth()
    assert truth["status"] == "error"
    assert truth["fault"] == {"message": NO_VALID_HOST,
                              "exception": "NoValidHost", "precheck": True}
    # below 2.34 the API answers the pre-check itself
    with pytest.raises(nova_exc.BadRequest, match=NO_VALID_HOST):
        _live_migrate(clients(cloud, "admin").nova("2.33"), server_id, "auto")


def test_error_profile_is_not_a_precheck_failure(devcloud_factory):
    cloud = devcloud_factory(profile="error")
    server_id = boot_server(cloud, name="error")
    with pytest.raises(MigrationError, match="went to ERROR"):
        _migrate_with(_migrator(cloud), server_id, "auto")
    nova = clients(cloud, "admin").nova("2.96")
    assert nova.servers.get(server_id).status == "ERROR"
    record = _newest(nova, server_id)
    assert record.status == "error"
    (truth,) = cloud.truth()
    assert "precheck" not in truth["fault"]


def test_timeout_aborts_the_running_migration(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(precopy=(30, 30)))
    server_id = boot_server(cloud, name="too-slow")
    migrator = _migrator(cloud, timeout=1.0)
    with pytest.raises(MigrationTimeout) as raised:
        _migrate_with(migrator, server_id, "auto")
    assert "was aborted (server now ACTIVE)" in str(raised.value)
    nova = clients(cloud, "admin").nova("2.96")
    assert _newest(nova, server_id).status == "cancelled"
    (truth,) = cloud.truth()
    assert truth["status"] == "cancelled"
    assert truth["aborted_at"] - truth["requested_at"] < 3
    assert '"status": "cancelled"' in cloud.truth_path.read_text()


def test_precheck_profile_fields():
    plan = profiles.Profile.load("precheck-fail").draw(random.Random(3))
    assert plan.precheck_error.exception == "NoValidHost"
    assert plan.error is None and plan.outage is None
    with pytest.raises(profiles.ProfileError, match="needs a message"):
        profiles.Profile.from_dict({"outcomes": [{"precheck_error": {}}]})
    with pytest.raises(profiles.ProfileError, match="precheck_seconds"):
        profiles.Profile.from_dict({"precheck_seconds": -1,
                                    "outcomes": [{"weight": 1}]})
