"""MetadataDowntime.boot_and_live_migrate with mocked clouds and a simulated guest."""

import re
import time
from unittest import mock

import pytest
import rally.plugins
from novaclient import api_versions
from rally import exceptions as rally_exceptions
from rally.common import cfg
from rally.task import sla as rally_sla
from rally.task.processing import charts as rally_charts

rally.plugins.load()

from rally_metadata_plugin.adapters import guest_meter as guest  # noqa: E402
from rally_metadata_plugin.adapters import live_migration as nova  # noqa: E402
from rally_metadata_plugin.adapters import network_meter  # noqa: E402
from rally_metadata_plugin.core import log_analysis as analysis  # noqa: E402
from rally_metadata_plugin.core import report  # noqa: E402
from rally_metadata_plugin.plugins import scenario as sc  # noqa: E402

from guest_commands import command_kind, poll_answer  # noqa: E402

CONF = cfg.CONF


@pytest.fixture(autouse=True)
def fast_conf():
    overrides = [
        ("nova_server_boot_prepoll_delay", 0, "openstack"),
        ("nova_server_boot_poll_interval", 0, "openstack"),
        ("nova_server_live_migrate_prepoll_delay", 0, "openstack"),
        ("nova_server_live_migrate_poll_interval", 0, "openstack"),
        ("nova_server_delete_poll_interval", 0, "openstack"),
        ("log_poll_interval", 0.1, "metadata_meter"),
        ("baseline_timeout", 2, "metadata_meter"),
        ("meter_start_timeout", 2, "metadata_meter"),
    ]
    for name, value, group in overrides:
        CONF.set_override(name, value, group)
    yield
    for name, _, group in overrides:
        CONF.clear_override(name, group)


class NotFound(Exception):
    code = 404


class FakeServer:
    def __init__(self, cloud, name):
        self.cloud = cloud
        self.id = "a3c5e0f2-0000-4000-8000-%012d" % len(cloud.servers)
        self.name = name
        self.status = "BUILD"
        self.addresses = {name: [dict(a) for a in entries]
                          for name, entries in cloud.server_addresses.items()}
        self.networks = {name: [a["addr"] for a in entries]
                         for name, entries in self.addresses.items()}
        self.manager = mock.Mock()
        self.manager.get.side_effect = self._get
        self.deleted = False

    def _get(self, server_id):
        if self.deleted:
            raise NotFound()
        self.status = self.cloud.boot_status
        return self

    def delete(self):
        self.deleted = True


class FakeGuestSSH:
    """A guest answering the meter's commands from a simulated, clock-driven log."""

    instances = []

    def __init__(self, cloud, user, host, port=22, pkey=None, password=None, **kw):
        self.cloud, self.host, self.port, self.pkey = cloud, host, port, pkey
        self.boot = time.monotonic() - 100.0
        self.started = None
        self.stopped = None
        self.fast = False
        self.close = mock.Mock()
        self.ran = []
        FakeGuestSSH.instances.append(self)

    def uptime(self):
        return time.monotonic() - self.boot

    def wait(self, timeout=120, interval=1):
        self.ran.append("wait")
        self._maybe_fail("wait")

    def _maybe_fail(self, kind):
        error = self.cloud.guest_failures.get(kind)
        if error is not None:
            raise error

    def _log(self, until):
        lines = ["#start %.2f v=1 tool=curl" % self.started]
        t, seq = self.started + 0.01, 1
        while t <= until:
            ok = not any(a <= t < b for a, b in self.cloud.outages(self))
            lines.append("%d %.2f %.2f %s %s" % (seq, t, t + 0.01, "P" if ok else "F",
                                                 "ok" if ok else self.cloud.failure_reason))
            t += 0.05
            seq += 1
        return "\n".join(lines) + "\n"

    def execute(self, cmd, stdin=None, timeout=3600):
        kind = command_kind(cmd)
        self.ran.append(kind)
        self._maybe_fail(kind)
        now = self.uptime()
        if kind == "install":
            assert "#!/bin/sh" in stdin
            return 0, "", ""
        if kind == "start":
            self.started = now
            return 0, "4242\n", ""
        if kind == "read":
            return 0, poll_answer(cmd, "%.2f 1.00\n%s" % (now, self._log(now))), ""
        if kind == "stop":
            self.stopped = now
            return 0, self._log(now) + "#stop %.2f signal\n" % now, ""
        if kind in ("fast-on", "fast-off"):
            self.fast = kind == "fast-on"
            return 0, "%.2f 1.00\n" % now if cmd.endswith("/proc/uptime") else "", ""
        return 0, "%.2f 1.00\n" % now, ""



class FakeNetworkMeter(network_meter.NetworkMeter):
    """The real meter's waiting and reading logic on a simulated, clock-driven log:
    the guest's address stops answering ``cloud.network_outage`` seconds from
    ``cloud.network_delay`` after each migration request (controller clock)."""

    instances = []

    def __init__(self, cloud, settings):
        super().__init__(settings, poll_interval=0.02)
        self.cloud = cloud
        self.started = None
        self.stopped = False
        FakeNetworkMeter.instances.append(self)

    def start(self):
        self.started = time.monotonic()
        return 4343

    def _log(self, until):
        boot = FakeGuestSSH.instances[-1].boot
        outages = self.cloud.network_outages(boot)
        lines = [analysis.format_event("start", self.started, self.settings.target)]
        t, seq = self.started + 0.01, 1
        while t <= until:
            ok = not any(a <= t < b for a, b in outages)
            reason = "ok" if ok else "icmp:timeout"
            lines.append(analysis.format_record(analysis.ProbeRecord(seq, t, t + 0.002, ok,
                                                                     reason)))
            t += 0.05
            seq += 1
        return "".join(lines)

    def read(self):
        if self.final_log is not None:
            return analysis.parse_log(self.final_log)
        return analysis.parse_log(self._log(time.monotonic()) if self.started else "")

    @property
    def text(self):
        return self._log(time.monotonic()) if self.started else ""

    def stop(self):
        if self.final_log is None:
            now = time.monotonic()
            self.final_log = (self._log(now) + analysis.format_event("stop", now)
                              if self.started else "")
        self.stopped = True
        return self.final_log


class FakeCloud:
    """User and admin nova, neutron, and the guest's metadata behaviour."""

    def __init__(self, version="2.79", hypervisors=2, outage=0.3):
        self.version = api_versions.APIVersion(version)
        self.servers = []
        self.boot_status = "ACTIVE"
        self.host = "cmp-1"
        self.migrations = []  # guest times of the requests
        self.outage = outage
        self.failure_reason = "curl:28"
        self.always_failing = False
        self.never_recovers = False
        self.guest_failures = {}
        self.migration_fault = None
        self.request_error = None
        self.request_errors = {}  # by request number, 1-based
        self.requests = 0
        self.host_of_error = None

        self.user_nova = mock.Mock()
        self.user_nova.servers.create.side_effect = self._create
        self.admin_nova = mock.Mock(api_version=self.version)
        self.admin_nova.services.list.return_value = [
            mock.Mock(host=f"cmp-{i}", status="enabled", state="up")
            for i in range(1, hypervisors + 1)]
        self.admin_nova.servers.get.side_effect = self._admin_get
        self.server_addresses = {"private": [{"addr": "10.0.0.5"}]}
        self.networks = [{"id": "net-1", "name": "private"}]
        self.user_neutron = mock.Mock()
        self.user_neutron.list_networks.side_effect = lambda **kw: {"networks": self.networks}
        self.neutron = mock.Mock()
        self.neutron.create_floatingip.return_value = {"id": "fip-1",
                                                       "floating_ip_address": "172.24.4.10"}
        self.pending = 0
        self.network_outage = 0.2
        self.network_delay = 0.02
        self.network_never_recovers = False
        self.network_unreachable = False

    def network_outages(self, boot):
        """Network outages on the controller clock (``boot``: the guest's boot there)."""
        if self.network_unreachable:
            return [(0, 1e12)]
        if self.network_never_recovers and self.migrations:
            return [(boot + self.migrations[0] + self.network_delay, 1e12)]
        return [(boot + t + self.network_delay, boot + t + self.network_delay
                 + self.network_outage) for t in self.migrations]

    def outages(self, guest_ssh):
        if self.always_failing:
            return [(0, 1e9)]
        if self.never_recovers and self.migrations:
            return [(self.migrations[0], 1e9)]
        return [(t, t + self.outage) for t in self.migrations]

    def _create(self, name, image, flavor, **kwargs):
        self.create_kwargs = kwargs
        server = FakeServer(self, name)
        self.servers.append(server)
        return server

    def _admin_get(self, server_id):
        if self.host_of_error:
            raise self.host_of_error
        view = mock.Mock(status="ACTIVE", fault=None)
        if self.pending:
            self.pending -= 1
            view.status = "MIGRATING"
            if not self.pending:
                if self.migration_fault:
                    view.status = "ERROR"
                    view.fault = self.migration_fault
                else:
                    self.host = "cmp-2" if self.host == "cmp-1" else "cmp-1"
                    view.status = "ACTIVE"
        setattr(view, nova.HOST_ATTRIBUTE, self.host)
        view.live_migrate.side_effect = self._live_migrate
        return view

    def _live_migrate(self, **kwargs):
        self.live_migrate_kwargs = kwargs
        self.requests += 1
        error = self.request_errors.get(self.requests) or self.request_error
        if error:
            raise error
        self.migrations.append(FakeGuestSSH.instances[-1].uptime())
        self.pending = 2


def make_scenario(cloud):
    context = {
        "user": {"keypair": {"name": "rally-keypair", "private": "PRIVATE KEY"}, "secgroup": {"name": "rally-sg"},
                 "credential": mock.Mock(profiler_hmac_key=None)},
        "tenant": {"networks": [{"id": "net-1", "name": "private"}]},
        "iteration": 1,
        "task": {"uuid": "task-uuid"},
        "owner_id": "owner-uuid",
    }
    clients = mock.Mock()
    clients.nova.return_value = cloud.user_nova
    clients.neutron.return_value = cloud.user_neutron
    admin_clients = mock.Mock()
    admin_clients.nova.return_value = cloud.admin_nova
    scenario = sc.BootAndLiveMigrate(context=context, admin_clients=admin_clients,
                                     clients=clients)
    scenario.neutron = cloud.neutron
    scenario._associate_floating_ip = mock.Mock()
    return scenario


def fake_network_meters(cloud):
    FakeNetworkMeter.instances.clear()
    return mock.patch.object(sc.network_meter, "NetworkMeter",
                             side_effect=lambda settings: FakeNetworkMeter(cloud, settings))


def run(cloud, **args):
    FakeGuestSSH.instances.clear()
    scenario = make_scenario(cloud)
    args.setdefault("migrations", 2)
    args.setdefault("probe_interval", 0.05)
    args.setdefault("fast_probe_interval", 0.05)
    args.setdefault("recovery_probes", 3)
    args.setdefault("baseline_probes", 3)
    args.setdefault("recovery_timeout", 1.5)
    args.setdefault("port", 2222)
    with mock.patch.object(sc.guest_ssh, "GuestSSH",
                           side_effect=lambda *a, **k: FakeGuestSSH(cloud, *a, **k)), \
            fake_network_meters(cloud):
        error = None
        try:
            scenario.run(image="image-id", flavor="flavor-id", **args)
        except Exception as e:
            error = e
    return scenario, error


def atomic_tree(actions):
    return [(a["name"], atomic_tree(a["children"])) for a in actions]


def test_happy_path_atomics_outputs_and_cleanup():
    cloud = FakeCloud()
    scenario, error = run(cloud, migrations=2)
    assert error is None, error
    tree = atomic_tree(scenario.atomic_actions())
    names = [name for name, _ in tree]
    assert names == [sc.BOOT, sc.ATTACH_IP, sc.WAIT_SSH, sc.START_METER, sc.BASELINE,
                     sc.MIGRATIONS, sc.COLLECT, sc.DELETE_SERVER]
    migrations = dict(tree)[sc.MIGRATIONS]
    assert [name for name, _ in migrations] == [sc.LIVE_MIGRATE, sc.WAIT_RECOVERY] * 2
    assert not any(a.get("failed") for a in scenario.atomic_actions())

    guest_ssh = FakeGuestSSH.instances[0]
    assert (guest_ssh.host, guest_ssh.port, guest_ssh.pkey) == ("172.24.4.10", 2222, "PRIVATE KEY")
    assert guest_ssh.ran.count("fast-on") == 2 and guest_ssh.ran.count("fast-off") == 2
    guest_ssh.close.assert_called_once()
    assert guest_ssh.ran.count("stop") == 1
    assert cloud.servers[0].deleted
    cloud.neutron.delete_floatingip.assert_called_once_with("fip-1")
    assert cloud.create_kwargs["security_groups"] == ["rally-sg"]
    assert cloud.create_kwargs["key_name"] == "rally-keypair"
    assert cloud.create_kwargs["nics"] == [{"net-id": "net-1"}]
    assert cloud.live_migrate_kwargs == {"host": None, "block_migration": "auto"}

    output = scenario._output
    assert [c["title"] for c in output["additive"]] == list(report.ADDITIVE_TITLES)
    for kind in ("additive", "complete"):
        for chart in output[kind]:
            assert rally_charts.validate_output(kind, chart) is None
    figures = report.extract(output)
    assert figures.measured and len(figures.migrations) == 2
    first = figures.migrations[0]
    assert (first.source_host, first.target_host) == ("cmp-1", "cmp-2")
    assert figures.migrations[1].target_host == "cmp-1"
    for migration in figures.migrations:
        assert migration.downtime == pytest.approx(0.3, abs=0.12)
        assert migration.pause is not None and abs(migration.pause) < 0.2
        assert migration.duration is not None
        assert not migration.ongoing and migration.status == report.STATUS_OK
    assert figures.total_downtime == pytest.approx(0.6, abs=0.25)

    checker = rally_sla.SLA.get("max_metadata_downtime")(1.0)
    assert checker.add_iteration({"timestamp": 1.0, "output": output, "error": []})
    strict = rally_sla.SLA.get("max_metadata_downtime")({"max_outage": 0.1})
    assert not strict.add_iteration({"timestamp": 1.0, "output": output, "error": []})


def test_expectation_and_url_defaults_and_overrides():
    cloud = FakeCloud()
    with mock.patch.object(sc.guest_meter, "GuestMeter", wraps=guest.GuestMeter) as meter_cls:
        run(cloud, migrations=1)
        settings = meter_cls.call_args[0][1]
        assert settings.url == "http://169.254.169.254/openstack/latest/meta_data.json"
        assert settings.expect == cloud.servers[0].id
        run(cloud, migrations=1, ip_version=6, guest_interface="ens3", expect="my-host")
        settings = meter_cls.call_args[0][1]
        assert settings.url.startswith("http://[fe80::a9fe:a9fe%25ens3]/")
        assert settings.expect == "my-host"


def test_fixed_ip_is_used_without_floating_ip():
    cloud = FakeCloud()
    scenario, error = run(cloud, migrations=1, use_floating_ip=False)
    assert error is None
    assert FakeGuestSSH.instances[0].host == "10.0.0.5"
    cloud.neutron.create_floatingip.assert_not_called()
    cloud.neutron.delete_floatingip.assert_not_called()
    assert [a["name"] for a in scenario.atomic_actions()][1] == sc.ATTACH_IP


def fixed(addr, version):
    return {"addr": addr, "version": version, "OS-EXT-IPS:type": "fixed"}


#: Dual-stack on two networks, IPv6 first, as nova may list them.
TWO_NETWORKS = {
    "private": [fixed("fd00:1::5", 6), fixed("10.0.0.5", 4)],
    "second": [fixed("2001:db8:2::7", 6), fixed("192.168.2.7", 4)],
}


def two_network_cloud():
    cloud = FakeCloud()
    cloud.server_addresses = TWO_NETWORKS
    cloud.networks = [{"id": "net-1", "name": "private"}, {"id": "net-2", "name": "second"}]
    return cloud


def test_dual_stack_floating_ip_goes_to_the_ipv4_address_of_the_context_network():
    cloud = two_network_cloud()
    scenario, error = run(cloud, migrations=1)
    assert error is None, error
    scenario._associate_floating_ip.assert_called_once_with(
        cloud.servers[0], cloud.neutron.create_floatingip.return_value, fixed_address="10.0.0.5")
    assert FakeGuestSSH.instances[0].host == "172.24.4.10"


@pytest.mark.parametrize("nic", [{"net-name": "second"}, {"net-id": "net-2"}])
def test_floating_ip_goes_to_the_network_nics_names(nic):
    cloud = two_network_cloud()
    # ip_version 6 probes metadata over IPv6; the floating IP still needs IPv4.
    scenario, error = run(cloud, migrations=1, nics=[nic], ip_version=6)
    assert error is None, error
    assert cloud.create_kwargs["nics"] == [{"net-id": "net-2"}]
    scenario._associate_floating_ip.assert_called_once_with(
        cloud.servers[0], cloud.neutron.create_floatingip.return_value,
        fixed_address="192.168.2.7")


@pytest.mark.parametrize("ip_version,nics,expected", [
    (4, None, "10.0.0.5"),
    (6, None, "fd00:1::5"),
    (6, [{"net-id": "net-2"}], "2001:db8:2::7"),
    (4, [{"net-name": "second"}], "192.168.2.7"),
])
def test_without_floating_ip_the_guest_is_reached_in_ip_versions_family(ip_version, nics,
                                                                        expected):
    cloud = two_network_cloud()
    _, error = run(cloud, migrations=1, use_floating_ip=False, ip_version=ip_version,
                   guest_interface="eth0", nics=nics)
    assert error is None, error
    assert FakeGuestSSH.instances[0].host == expected


def test_no_address_of_the_needed_family_fails_clearly_and_cleans_up():
    cloud = FakeCloud()
    cloud.server_addresses = {"private": [fixed("fd00:1::5", 6)]}
    scenario, error = run(cloud, migrations=1)
    assert isinstance(error, ValueError)
    assert "no IPv4 fixed address on network 'private'" in str(error)
    assert "use_floating_ip" in str(error)
    cloud.neutron.create_floatingip.assert_not_called()
    assert cloud.servers[0].deleted


def test_floating_ip_is_associated_with_the_port_holding_the_address():
    cloud = two_network_cloud()
    scenario = make_scenario(cloud)
    server = FakeServer(cloud, "vm")
    fip = {"id": "fip-1", "floating_ip_address": "172.24.4.10"}
    cloud.neutron.list_ports.return_value = [
        {"id": "port-1", "fixed_ips": [{"ip_address": "fd00:1::5"}, {"ip_address": "10.0.0.5"}]},
        {"id": "port-2", "fixed_ips": [{"ip_address": "2001:db8:2::7"},
                                       {"ip_address": "192.168.2.7"}]},
    ]
    cloud.neutron.associate_floatingip.return_value = fip
    server.addresses["second"].append({"addr": "172.24.4.10", "version": 4,
                                       "OS-EXT-IPS:type": "floating"})
    sc.BootAndLiveMigrate._associate_floating_ip(scenario, server, fip,
                                                 fixed_address="192.168.2.7")
    cloud.neutron.list_ports.assert_called_once_with(device_id=server.id)
    cloud.neutron.associate_floatingip.assert_called_once_with(
        port_id="port-2", floatingip_id="fip-1", fixed_ip_address="192.168.2.7")
    assert "nova.associate_floating_ip" in [a["name"] for a in scenario.atomic_actions()]


def test_target_hosts_are_requested_in_turn():
    cloud = FakeCloud()
    run(cloud, migrations=1, target_hosts=["cmp-1", "cmp-2"])
    assert cloud.live_migrate_kwargs["host"] == "cmp-2"


def test_old_microversion_request_form():
    cloud = FakeCloud(version="2.24")
    _, error = run(cloud, migrations=1, block_migration=False)
    assert error is None
    assert cloud.live_migrate_kwargs == {"host": None, "block_migration": False,
                                         "disk_over_commit": False}


def test_auto_with_a_pin_below_2_25_fails_before_booting():
    """"auto" used to be sent as false (shared storage) and fail on local disks."""
    cloud = FakeCloud(version="2.24")
    _, error = run(cloud, migrations=1)
    assert isinstance(error, nova.MigrationError)
    assert "set block_migration to true" in str(error)
    assert cloud.servers == []


def test_unpinned_environment_sends_auto_at_the_negotiated_microversion():
    cloud = FakeCloud(version="2.0")
    scenario = make_scenario(cloud)

    def admin_nova(version=None):
        if version is not None:
            cloud.admin_nova.api_version = api_versions.APIVersion(version)
        return cloud.admin_nova

    scenario._admin_clients.nova.side_effect = admin_nova
    with mock.patch("novaclient.api_versions.discover_version",
                    return_value=api_versions.APIVersion("2.96")), \
            mock.patch.object(sc.guest_ssh, "GuestSSH",
                              side_effect=lambda *a, **k: FakeGuestSSH(cloud, *a, **k)), \
            fake_network_meters(cloud):
        FakeGuestSSH.instances.clear()
        scenario.run(image="image-id", flavor="flavor-id", migrations=1, port=2222,
                     probe_interval=0.05, fast_probe_interval=0.05, recovery_probes=3,
                     baseline_probes=3, recovery_timeout=1.5)
    assert cloud.live_migrate_kwargs == {"host": None, "block_migration": "auto"}


def test_recovery_timeout_records_an_ongoing_outage_and_fails():
    cloud = FakeCloud()
    cloud.never_recovers = True
    scenario, error = run(cloud, migrations=3, recovery_timeout=0.6)
    assert isinstance(error, sc.MetadataNotRecovered)
    assert "did not recover within 0.6 s after live migration 1" in str(error)
    figures = report.extract(scenario._output)
    (migration,) = figures.migrations
    assert migration.ongoing and migration.status == report.STATUS_NOT_RECOVERED
    assert migration.downtime >= 0.5
    assert figures.total_downtime == migration.downtime
    assert cloud.servers[0].deleted
    guest_ssh = FakeGuestSSH.instances[0]
    assert "stop" in guest_ssh.ran
    guest_ssh.close.assert_called_once()
    notes = next(c for c in scenario._output["complete"] if c["title"] == report.NOTES_TITLE)
    assert any("curl: timed out" in line for line in notes["data"])


def test_baseline_failure_message_names_causes():
    cloud = FakeCloud()
    cloud.always_failing = True
    cloud.failure_reason = "http:404"
    scenario, error = run(cloud)
    assert isinstance(error, guest.BaselineError)
    assert "HTTP 404" in str(error) and "metadata_url" in str(error)
    assert not report.extract(scenario._output).measured


def test_migration_error_state_carries_novas_fault():
    cloud = FakeCloud()
    cloud.migration_fault = {"message": "No valid host was found", "code": 500}
    scenario, error = run(cloud)
    assert isinstance(error, nova.MigrationError)
    assert "No valid host was found" in str(error)
    figures = report.extract(scenario._output)
    assert figures.migrations[0].status.startswith("failed: ")
    failed = [a for a in scenario.atomic_actions() if a.get("failed")]
    assert [a["name"] for a in failed] == [sc.MIGRATIONS]


def sla_verdict(config, output):
    checker = rally_sla.SLA.get("max_metadata_downtime")(config)
    passed = checker.add_iteration({"timestamp": 1.0, "output": output, "error": []})
    return passed, checker.details()


def test_rejected_migration_is_failed_in_the_table_and_no_downtime_sample():
    cloud = FakeCloud(outage=0.3)
    cloud.request_errors = {2: RuntimeError("No valid host was found")}
    scenario, error = run(cloud, migrations=2)
    assert isinstance(error, RuntimeError)
    figures = report.extract(scenario._output)
    first, second = figures.migrations
    assert first.status == report.STATUS_OK and not first.failed
    assert second.failed and second.status == "failed: No valid host was found"
    assert figures.measured and [m.index for m in figures.measured_migrations] == [1]
    per_migration = next(c for c in scenario._output["additive"]
                         if c["title"] == report.PER_MIGRATION_TITLE)
    assert [name for name, _ in per_migration["data"]] == [report.ALL_MIGRATIONS,
                                                           report.migration_row_name(1)]
    passed, details = sla_verdict(6.0, scenario._output)
    assert passed and "(worst: iteration 1, migration 1)" in details


def test_iteration_whose_only_migration_was_rejected_is_not_measured():
    cloud = FakeCloud()
    cloud.request_error = RuntimeError("Compute service of cmp-2 is unavailable")
    scenario, error = run(cloud, migrations=1)
    assert isinstance(error, RuntimeError)
    figures = report.extract(scenario._output)
    assert not figures.measured
    (row,) = figures.migrations
    assert row.status == "failed: Compute service of cmp-2 is unavailable"
    passed, details = sla_verdict(6.0, scenario._output)
    assert not passed and "no metadata measurement" in details


def test_unobserved_recovery_is_a_failed_migration_not_a_measurement():
    cloud = FakeCloud()
    lost = guest.GuestError("SSH to the guest was lost")
    with mock.patch.object(guest.GuestMeter, "wait_for_recovery", side_effect=lost):
        scenario, error = run(cloud, migrations=1)
    assert error is lost
    figures = report.extract(scenario._output)
    (row,) = figures.migrations
    assert row.target_host == "cmp-2"
    assert row.status == ("failed: metadata recovery could not be observed: SSH to the guest "
                          "was lost")
    assert not figures.measured


# -- cleanup whatever fails -----------------------------------------------------


def inject(step, cloud):
    """Make ``step`` fail; returns (expected exception type, server?, fip?, ssh?, launched?)."""
    boom = RuntimeError("injected failure at " + step)
    if step == "hypervisors":
        cloud.admin_nova.services.list.return_value = [
            mock.Mock(host="cmp-1", status="enabled", state="up")]
        return nova.MigrationError, False, False, False, False
    if step == "boot_create":
        cloud.user_nova.servers.create.side_effect = boom
        return RuntimeError, False, False, False, False
    if step == "boot_wait":
        cloud.boot_status = "ERROR"
        return rally_exceptions.GetResourceErrorStatus, True, False, False, False
    if step == "fip_create":
        cloud.neutron.create_floatingip.side_effect = boom
        return RuntimeError, True, False, False, False
    if step == "fip_associate":
        cloud.associate_error = boom
        return RuntimeError, True, True, False, False
    if step == "ssh_wait":
        cloud.guest_failures["wait"] = rally_exceptions.SSHTimeout("no ssh")
        return rally_exceptions.SSHTimeout, True, True, True, False
    if step == "install":
        cloud.guest_failures["install"] = OSError("reset")
        return guest.GuestError, True, True, True, False
    if step == "start":
        cloud.guest_failures["start"] = OSError("reset")
        return guest.GuestError, True, True, True, True
    if step == "baseline":
        cloud.always_failing = True
        return guest.BaselineError, True, True, True, True
    if step == "host_of":
        cloud.host_of_error = boom
        return RuntimeError, True, True, True, True
    if step == "fast_on":
        cloud.guest_failures["fast-on"] = OSError("reset")
        return guest.GuestError, True, True, True, True
    if step == "request":
        cloud.request_error = boom
        return RuntimeError, True, True, True, True
    if step == "migration_error":
        cloud.migration_fault = {"message": "boom"}
        return nova.MigrationError, True, True, True, True
    if step == "recovery":
        cloud.never_recovers = True
        return sc.MetadataNotRecovered, True, True, True, True
    if step == "stop":
        cloud.guest_failures["stop"] = OSError("reset")
        return guest.GuestError, True, True, True, True
    if step == "network_baseline":
        cloud.network_unreachable = True
        return network_meter.NetworkBaselineError, True, True, True, True
    if step == "network_recovery":
        cloud.network_never_recovers = True
        return sc.NetworkNotRecovered, True, True, True, True
    if step == "delete_fip":
        cloud.neutron.delete_floatingip.side_effect = boom
        return RuntimeError, True, True, True, True
    raise AssertionError(step)


STEPS = ["hypervisors", "boot_create", "boot_wait", "fip_create", "fip_associate", "ssh_wait",
         "install", "start", "baseline", "host_of", "fast_on", "request", "migration_error",
         "recovery", "stop", "delete_fip", "network_baseline", "network_recovery"]


@pytest.mark.parametrize("step", STEPS)
def test_cleanup_whatever_fails(step):
    cloud = FakeCloud()
    cloud.associate_error = None
    expected, has_server, has_fip, has_ssh, launched = inject(step, cloud)
    FakeGuestSSH.instances.clear()
    scenario = make_scenario(cloud)
    if cloud.associate_error:
        scenario._associate_floating_ip.side_effect = cloud.associate_error
    with mock.patch.object(sc.guest_ssh, "GuestSSH",
                           side_effect=lambda *a, **k: FakeGuestSSH(cloud, *a, **k)), \
            fake_network_meters(cloud):
        with pytest.raises(expected):
            scenario.run(image="image-id", flavor="flavor-id", migrations=2,
                         probe_interval=0.05, fast_probe_interval=0.05, baseline_probes=3,
                         recovery_probes=3, recovery_timeout=0.5)
    assert bool(cloud.servers) == has_server
    if has_server:
        assert cloud.servers[0].deleted, "server not deleted"
    if has_fip:
        cloud.neutron.delete_floatingip.assert_called_once_with("fip-1")
    else:
        cloud.neutron.delete_floatingip.assert_not_called()
    assert bool(FakeGuestSSH.instances) == has_ssh
    if has_ssh:
        guest_ssh = FakeGuestSSH.instances[0]
        guest_ssh.close.assert_called()
        if launched:
            assert "stop" in guest_ssh.ran, "meter not stopped"
        else:
            assert "stop" not in guest_ssh.ran
    # The network meter exists once the guest is reachable, and is stopped whatever failed.
    assert bool(FakeNetworkMeter.instances) == has_ssh
    assert all(meter.stopped for meter in FakeNetworkMeter.instances), "network meter running"
    # The additive charts are there, same titles, same order, whatever failed.
    assert [c["title"] for c in scenario._output["additive"]] == list(report.ADDITIVE_TITLES)
    if step != "delete_fip":  # fails after the report was made
        notes = next(c for c in scenario._output["complete"]
                     if c["title"] == report.NOTES_TITLE)
        assert any(line.startswith("The iteration failed") for line in notes["data"])
    names = [a["name"] for a in scenario.atomic_actions()]
    assert all(re.fullmatch(r"[a-z]+\.[a-z_]+", n) for n in names)


def test_workdir_argument_reaches_the_meter():
    cloud = FakeCloud()
    with mock.patch.object(sc.guest_meter, "GuestMeter", wraps=guest.GuestMeter) as meter_cls:
        _, error = run(cloud, migrations=1, workdir="/var/tmp/rally-meter")
        assert error is None, error
        assert meter_cls.call_args[0][1].workdir == "/var/tmp/rally-meter"
        run(cloud, migrations=1)
        assert meter_cls.call_args[0][1].workdir == \
            "/tmp/rally-metadata-meter-" + cloud.servers[-1].id[:8]


# -- the network meter -----------------------------------------------------------


def test_network_downtime_beside_metadata_downtime():
    cloud = FakeCloud(outage=0.3)
    cloud.network_outage, cloud.network_delay = 0.2, 0.02
    scenario, error = run(cloud, migrations=2)
    assert error is None, error
    (meter,) = FakeNetworkMeter.instances
    assert meter.settings.target == "ICMP echo to 172.24.4.10"  # the default: what Tempest does
    assert meter.stopped
    # No new atomic action: reports line up with runs without the network meter.
    names = [name for name, _ in atomic_tree(scenario.atomic_actions())]
    assert names == [sc.BOOT, sc.ATTACH_IP, sc.WAIT_SSH, sc.START_METER, sc.BASELINE,
                     sc.MIGRATIONS, sc.COLLECT, sc.DELETE_SERVER]
    figures = report.extract(scenario._output)
    for row in figures.migrations:
        assert row.network_downtime == pytest.approx(0.2, abs=row.network_downtime_error + 0.02)
        assert row.network_lost == pytest.approx(0.02, abs=0.08)
        assert row.metadata_lost_after_network is not None
        assert row.network_ongoing is False
    assert figures.network_downtime == pytest.approx(0.4, abs=0.15)
    assert figures.network_measured
    checker = rally_sla.SLA.get("max_network_downtime")(1.0)
    assert checker.add_iteration({"timestamp": 1.0, "output": scenario._output, "error": []})
    strict = rally_sla.SLA.get("max_network_downtime")({"per_migration": 0.05})
    assert not strict.add_iteration({"timestamp": 1.0, "output": scenario._output, "error": []})


def test_tcp_network_probe_connects_to_the_ssh_port():
    cloud = FakeCloud()
    _, error = run(cloud, migrations=1, network_probe="tcp", network_probe_interval=0.2,
                   network_probe_timeout=0.5)
    assert error is None, error
    settings = FakeNetworkMeter.instances[0].settings
    assert (settings.mode, settings.address, settings.port, settings.interval,
            settings.timeout) == ("tcp", "172.24.4.10", 2222, 0.2, 0.5)


def test_without_the_network_meter_the_charts_keep_their_titles():
    cloud = FakeCloud()
    scenario, error = run(cloud, migrations=1, network_probe="none")
    assert error is None, error
    assert FakeNetworkMeter.instances == []
    assert [c["title"] for c in scenario._output["additive"]] == list(report.ADDITIVE_TITLES)
    figures = report.extract(scenario._output)
    assert figures.network_downtime is None and figures.migrations[0].network_downtime is None
    passed, details = (lambda c: (c.add_iteration({"timestamp": 1.0, "output": scenario._output,
                                                   "error": []}), c.details()))(
        rally_sla.SLA.get("max_network_downtime")(3.0))
    assert not passed and "no network measurement" in details


def test_network_that_never_recovers_is_ongoing_never_zero():
    cloud = FakeCloud()
    cloud.network_never_recovers = True
    scenario, error = run(cloud, migrations=2, recovery_timeout=0.6)
    assert isinstance(error, sc.NetworkNotRecovered)
    assert "did not answer the network meter (ICMP echo to 172.24.4.10) 3 times in a row " \
           "within 0.6 s after live migration 1" in str(error)
    (row,) = report.extract(scenario._output).migrations
    assert row.network_ongoing and row.network_downtime >= 0.5
    assert FakeNetworkMeter.instances[0].stopped


def test_icmp_cannot_measure_a_loopback_floating_ip():
    cloud = FakeCloud()
    cloud.neutron.create_floatingip.return_value = {"id": "fip-1",
                                                    "floating_ip_address": "127.0.0.9"}
    scenario, error = run(cloud, migrations=1)
    assert isinstance(error, ValueError)
    assert "loopback" in str(error) and "network_probe 'tcp'" in str(error)
    assert cloud.servers[0].deleted
    assert [c["title"] for c in scenario._output["additive"]] == list(report.ADDITIVE_TITLES)


def test_no_ping_on_the_rally_host_fails_validation():
    validator = sc.MetadataMeterArgsValidator()
    with mock.patch.object(network_meter.shutil, "which", return_value=None):
        with pytest.raises(Exception, match="needs the ping command on the Rally host"):
            validator.validate({}, {"args": {}}, sc.BootAndLiveMigrate, None)
        validator.validate({}, {"args": {"network_probe": "tcp"}}, sc.BootAndLiveMigrate, None)
