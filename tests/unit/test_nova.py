"""nova: microversion-aware live migration and waiting for the host change."""

from unittest import mock

import pytest
from novaclient import api_versions
from novaclient.v2 import servers as nova_servers

from rally_metadata_plugin.adapters import live_migration as nova


def real_server(version):
    """A novaclient Server dispatching by ``version``; returns (server, action mock)."""
    api = mock.Mock(api_version=api_versions.APIVersion(version))
    manager = nova_servers.ServerManager(api)
    manager._action = mock.Mock(return_value=None)
    return nova_servers.Server(manager, {"id": "srv-1"}, loaded=True), manager._action


def admin_client(version, server):
    client = mock.Mock(api_version=api_versions.APIVersion(version))
    client.servers.get.return_value = server
    return client


@pytest.mark.parametrize("version", ["2.0", "2.1", "2.24"])
@pytest.mark.parametrize("block_migration,expected", [("auto", False), (True, True),
                                                      (False, False)])
def test_before_2_25_sends_boolean_and_disk_over_commit(version, block_migration, expected):
    server, action = real_server(version)
    migrator = nova.LiveMigrator(admin_client(version, server))
    migrator.request("srv-1", block_migration, host=None)
    action.assert_called_once_with(
        "os-migrateLive", server,
        {"host": None, "block_migration": expected, "disk_over_commit": False})


@pytest.mark.parametrize("version", ["2.25", "2.29", "2.30", "2.67", "2.68", "2.96"])
@pytest.mark.parametrize("block_migration", ["auto", True, False])
def test_from_2_25_sends_auto_or_value_and_never_force(version, block_migration):
    server, action = real_server(version)
    migrator = nova.LiveMigrator(admin_client(version, server))
    migrator.request("srv-1", block_migration, host="cmp-2")
    (name, _, body), _ = action.call_args
    assert name == "os-migrateLive"
    assert body == {"host": "cmp-2", "block_migration": block_migration}
    assert "disk_over_commit" not in body and "force" not in body


def test_unknown_client_version_is_treated_as_2_0():
    assert nova.microversion(object()) == (2, 0)
    assert nova.live_migrate_kwargs((2, 0), "auto", None)["disk_over_commit"] is False


def states(*pairs, fault=None):
    """Admin views of the server: (status, host) per poll."""
    views = []
    for status, host in pairs:
        view = mock.Mock(status=status, fault=fault if status == "ERROR" else None)
        setattr(view, nova.HOST_ATTRIBUTE, host)
        views.append(view)
    return views


def migrator_with(views, timeout=100.0):
    client = mock.Mock()
    client.servers.get.side_effect = views
    ticks = iter(range(1000))
    return nova.LiveMigrator(client, timeout=timeout, poll_interval=1, prepoll_delay=0,
                             clock=lambda: float(next(ticks)), sleep=lambda s: None), client


def test_active_on_the_same_host_keeps_waiting():
    migrator, client = migrator_with(states(("ACTIVE", "cmp-1"), ("MIGRATING", "cmp-1"),
                                            ("ACTIVE", "cmp-1"), ("ACTIVE", "cmp-2")))
    assert migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0) == "cmp-2"
    assert client.servers.get.call_count == 4


def test_error_state_fails_with_novas_fault():
    fault = {"message": "Migration pre-check error", "code": 500,
             "details": "Traceback...\nMigrationPreCheckError: no shared storage"}
    migrator, _ = migrator_with(states(("MIGRATING", "cmp-1"), ("ERROR", "cmp-1"), fault=fault))
    with pytest.raises(nova.MigrationError) as error:
        migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0)
    message = str(error.value)
    assert "ERROR" in message and "Migration pre-check error" in message
    assert "no shared storage" in message and "500" in message


def test_rollback_is_detected():
    migrator, _ = migrator_with(states(("MIGRATING", "cmp-1"),
                                       *[("ACTIVE", "cmp-1")] * nova.ROLLBACK_CONFIRMATIONS))
    with pytest.raises(nova.MigrationError, match="rolled back"):
        migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0)


def test_timeout_names_the_last_state_and_the_option():
    migrator, _ = migrator_with(states(*[("MIGRATING", "cmp-1")] * 10), timeout=3)
    with pytest.raises(nova.MigrationTimeout) as error:
        migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0)
    assert "MIGRATING on cmp-1" in str(error.value)
    assert "nova_server_live_migrate_timeout" in str(error.value)


def test_request_then_wait_returns_the_target_host():
    server, action = real_server("2.79")
    views = [server] + states(("MIGRATING", "cmp-1"), ("ACTIVE", "cmp-2"))
    migrator, client = migrator_with(views)
    client.api_version = api_versions.APIVersion("2.79")
    migrator.request("srv-1")
    assert migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0) == "cmp-2"
    action.assert_called_once()


def compute_services(*states):
    """nova-compute services as (host, status, state)."""
    return [mock.Mock(host=host, status=status, state=state) for host, status, state in states]


def test_hypervisor_check():
    client = mock.Mock()
    client.services.list.return_value = compute_services(("cmp-1", "enabled", "up"))
    with pytest.raises(nova.MigrationError, match="at least 2 compute hosts"):
        nova.LiveMigrator(client).require_hypervisors(2)
    client.services.list.return_value = compute_services(("cmp-1", "enabled", "up"),
                                                         ("cmp-2", "enabled", "up"))
    assert nova.LiveMigrator(client).require_hypervisors(2) == 2
    client.services.list.assert_called_with(binary="nova-compute")


def test_only_enabled_and_up_compute_services_count():
    client = mock.Mock()
    client.hypervisors.list.return_value = [mock.Mock()] * 3
    client.services.list.return_value = compute_services(
        ("cmp-1", "enabled", "up"), ("cmp-2", "disabled", "up"), ("cmp-3", "enabled", "down"))
    with pytest.raises(nova.MigrationError) as error:
        nova.LiveMigrator(client).require_hypervisors(2)
    message = str(error.value)
    assert "enabled and up" in message and "1 of 3" in message
    assert "cmp-2 (disabled, up)" in message and "cmp-3 (enabled, down)" in message


def test_host_of_needs_the_admin_attribute():
    client = mock.Mock()
    client.servers.get.return_value = states(("ACTIVE", None))[0]
    with pytest.raises(nova.MigrationError, match="admin role"):
        nova.LiveMigrator(client).host_of("srv-1")


def test_pick_target_rotates_and_skips_the_current_host():
    hosts = ["cmp-1", "cmp-2", "cmp-3"]
    assert nova.pick_target(None, "cmp-1", 1) is None
    assert nova.pick_target(hosts, "cmp-1", 1) == "cmp-2"
    assert nova.pick_target(hosts, "cmp-1", 2) == "cmp-3"
    assert nova.pick_target(hosts, "cmp-2", 1) == "cmp-1"
    with pytest.raises(nova.MigrationError, match="already on"):
        nova.pick_target(["cmp-1"], "cmp-1", 1)


# -- microversion negotiation (block_migration "auto") ---------------------------


def test_unpinned_client_negotiates_the_highest_version_for_auto():
    configured = admin_client("2.0", None)
    server, action = real_server("2.79")
    negotiated = admin_client("2.79", server)
    client_at = mock.Mock(return_value=negotiated)
    migrator = nova.LiveMigrator(configured, client_at=client_at)
    with mock.patch("novaclient.api_versions.discover_version",
                    return_value=api_versions.APIVersion("2.79")) as discover:
        assert migrator.negotiate("auto") == (2, 79)
    assert discover.call_args[0][0] is configured
    client_at.assert_called_once_with("2.79")
    migrator.request("srv-1", "auto", host=None)
    (_, _, body), _ = action.call_args
    assert body == {"host": None, "block_migration": "auto"}


def test_pinned_version_is_respected():
    client_at = mock.Mock()
    migrator = nova.LiveMigrator(admin_client("2.79", None), client_at=client_at)
    assert migrator.negotiate("auto") == (2, 79)
    client_at.assert_not_called()


@pytest.mark.parametrize("block_migration", [True, False])
def test_a_pin_below_2_25_is_fine_for_an_explicit_block_migration(block_migration):
    migrator = nova.LiveMigrator(admin_client("2.10", None), client_at=mock.Mock())
    assert migrator.negotiate(block_migration) == (2, 10)


def test_auto_with_a_pin_below_2_25_says_what_to_set():
    migrator = nova.LiveMigrator(admin_client("2.10", None), client_at=mock.Mock())
    with pytest.raises(nova.MigrationError) as error:
        migrator.negotiate("auto")
    message = str(error.value)
    assert "2.25" in message and "pins 2.10" in message
    assert "set block_migration to true" in message


def test_auto_on_a_cloud_older_than_2_25_says_what_to_set():
    migrator = nova.LiveMigrator(admin_client("2.0", None), client_at=mock.Mock())
    with mock.patch("novaclient.api_versions.discover_version",
                    return_value=api_versions.APIVersion("2.12")):
        with pytest.raises(nova.MigrationError, match="supports up to 2.12; set block_migration"):
            migrator.negotiate("auto")


# -- asynchronous pre-check failures (2.34+) ----------------------------------------


def record(id, status):
    return mock.Mock(id=id, status=status, migration_type="live-migration")


def test_fast_precheck_failure_fails_at_once_with_novas_reason():
    """Nova puts the server back to ACTIVE on its source before any poll sees MIGRATING."""
    server, action = real_server("2.79")
    action.return_value = mock.Mock(request_ids=["req-42"])
    views = [server] + states(*[("ACTIVE", "cmp-1")] * 50)
    migrator, client = migrator_with(views, timeout=40)
    client.api_version = api_versions.APIVersion("2.79")
    client.migrations.list.side_effect = [
        [record(3, "completed")],                      # before the request
        [record(3, "completed"), record(4, "error")],  # nova's pre-check failed
    ]
    client.instance_action.get.return_value = mock.Mock(events=[
        {"event": "conductor_live_migrate_instance", "result": "Error",
         "details": "No valid host was found. There are not enough hosts available."}])
    migrator.request("srv-1", "auto", host=None)
    with pytest.raises(nova.MigrationError) as error:
        migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0)
    assert not isinstance(error.value, nova.MigrationTimeout)
    message = str(error.value)
    assert "No valid host was found" in message and "migration 4: error" in message
    assert client.servers.get.call_count == 2  # the request, then one poll
    client.instance_action.get.assert_called_once_with("srv-1", "req-42")


def test_precheck_reason_from_the_traceback_below_2_84():
    action = mock.Mock(events=[
        {"event": "compute_check_can_live_migrate_destination", "result": "Success"},
        {"event": "conductor_live_migrate_instance", "result": "Error",
         "traceback": "Traceback (most recent call last):\n  ...\n"
                      "nova.exception.MigrationPreCheckError: Migration pre-check error: "
                      "cmp-1 is not on shared storage\n"}])
    assert nova.action_failure(action) == (
        "conductor_live_migrate_instance: nova.exception.MigrationPreCheckError: Migration "
        "pre-check error: cmp-1 is not on shared storage")


def test_an_older_failed_migration_is_not_ours():
    server, _ = real_server("2.79")
    views = [server] + states(("ACTIVE", "cmp-1"), ("MIGRATING", "cmp-1"), ("ACTIVE", "cmp-2"))
    migrator, client = migrator_with(views)
    client.api_version = api_versions.APIVersion("2.79")
    client.migrations.list.return_value = [record(2, "error")]
    migrator.request("srv-1", "auto", host=None)
    assert migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0) == "cmp-2"


# -- a migration still running at the timeout is aborted (2.24+) ----------------------


def test_timeout_aborts_the_running_migration():
    views = states(*[("MIGRATING", "cmp-1")] * 4, ("ACTIVE", "cmp-1"))
    migrator, client = migrator_with(views, timeout=3)
    client.api_version = api_versions.APIVersion("2.79")
    client.server_migrations.list.return_value = [record(9, "running")]
    with pytest.raises(nova.MigrationTimeout) as error:
        migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0)
    client.server_migrations.live_migration_abort.assert_called_once_with("srv-1", 9)
    assert "migration 9 was aborted (server now ACTIVE)" in str(error.value)


def test_timeout_below_2_24_says_the_migration_may_still_run():
    migrator, client = migrator_with(states(*[("MIGRATING", "cmp-1")] * 10), timeout=3)
    client.api_version = api_versions.APIVersion("2.12")
    with pytest.raises(nova.MigrationTimeout, match="could not be aborted"):
        migrator.wait_for_host_change("srv-1", "cmp-1", started=0.0)
    client.server_migrations.live_migration_abort.assert_not_called()
