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


def test_hypervisor_check():
    client = mock.Mock()
    client.hypervisors.list.return_value = [mock.Mock()]
    with pytest.raises(nova.MigrationError, match="at least 2 compute hosts"):
        nova.LiveMigrator(client).require_hypervisors(2)
    client.hypervisors.list.return_value = [mock.Mock(), mock.Mock()]
    assert nova.LiveMigrator(client).require_hypervisors(2) == 2


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
