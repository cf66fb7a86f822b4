"""``MetadataDowntime.boot_and_live_migrate``: metadata downtime across live migrations.

The scenario translates; the work is done by adapters around a pure core:
``guest_meter.GuestMeter`` (the meter over SSH), ``network_meter.NetworkMeter`` (the
controller probing the guest's address), ``live_migration.LiveMigrator`` (the
microversion-aware migration), ``report`` (figures and charts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import time
import typing as t

from rally.common import cfg
from rally.common import logging
from rally.common import validation
from rally.task import atomic
from rally.task import scenario as rally_scenario
from rally.task import types
from rally.task import utils as task_utils
from rally_openstack.common import consts
from rally_openstack.common import validators as openstack_validators
from rally_openstack.task import scenario
from rally_openstack.task.scenarios.vm import utils as vm_utils

from rally_metadata_plugin.adapters import guest_meter
from rally_metadata_plugin.adapters import guest_ssh
from rally_metadata_plugin.adapters import live_migration
from rally_metadata_plugin.adapters import network_meter
from rally_metadata_plugin.core import report
from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import clock_mapping as clocklib
from rally_metadata_plugin.core import networks
from rally_metadata_plugin.core import network_probe as probes
from rally_metadata_plugin.core import scenario_args
from rally_metadata_plugin.plugins import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
opts.register(CONF)

Field = rally_scenario.Field
NAME = report.SCENARIO_NAME

#: Atomic action names: an interface (reports, trends), never derived from arguments.
BOOT = "nova.boot_server"
ATTACH_IP = "vm.attach_floating_ip"
WAIT_SSH = "vm.wait_for_ssh"
START_METER = "metadata.start_meter"
BASELINE = "metadata.baseline"
MIGRATIONS = "metadata.live_migrations"
LIVE_MIGRATE = "nova.live_migrate"
WAIT_RECOVERY = "metadata.wait_recovery"
COLLECT = "metadata.collect"
DELETE_SERVER = "nova.delete_server"


class MetadataNotRecovered(Exception):
    """Metadata did not come back within the recovery timeout."""


class NetworkNotRecovered(Exception):
    """The guest's address did not answer again within the recovery timeout."""


@validation.configure(name="metadata_meter_args")
class MetadataMeterArgsValidator(validation.Validator):
    """Checks the arguments of the metadata meter that depend on each other."""

    def validate(self, context, config, plugin_cls, plugin_cfg):
        args = _workload_args(plugin_cls, config)
        problems = scenario_args.MeterArguments.from_mapping(args).problems()
        unavailable = network_meter.unavailable(args.get("network_probe"))
        if unavailable:
            problems.append(unavailable)
        if problems:
            self.fail("; ".join(problems) + ".")


@validation.add("required_platform", platform="openstack", users=True)
@validation.configure(name="metadata_floating_network", platform="openstack")
class FloatingNetworkValidator(validation.Validator):
    """Checks the external network of the floating IP, when the scenario uses one.

    With use_floating_ip true, floating_network (a name or an id) must be an
    external network each user sees, or, omitted, at least one external
    network must exist (the scenario takes the first). With use_floating_ip
    false nothing is checked: clouds with provider networks only pass.
    """

    @openstack_validators.with_roles_ctx()
    def validate(self, context, config, plugin_cls, plugin_cfg):
        args = _workload_args(plugin_cls, config)
        if not args.get("use_floating_ip"):
            return
        users_by_problem: dict[str, list[str]] = {}
        for user in context["users"]:
            credential = user["credential"]
            seen = credential.clients().neutron().list_networks()["networks"]
            problem = networks.floating_network_problem(seen, args.get("floating_network"))
            if problem:
                users_by_problem.setdefault(problem, []).append(str(credential.username))
        if users_by_problem:
            self.fail(" ".join(f"{problem} (networks seen by user {', '.join(users)})."
                               for problem, users in users_by_problem.items()))


def _workload_args(plugin_cls, config) -> dict[str, t.Any]:
    """A workload's arguments completed with the defaults of the scenario's ``run()``
    (the one place they are written)."""
    parameters = inspect.signature(plugin_cls.run).parameters.values()
    args = {p.name: p.default for p in parameters if p.default is not p.empty}
    args.update((config or {}).get("args") or {})
    return args


@dataclasses.dataclass
class _Iteration:
    """What one iteration created and measured; read by the cleanup and the report."""

    server: t.Any = None
    #: Name of the network the guest is reached on (None: the first suitable one).
    network: t.Optional[str] = None
    floating_ip: t.Optional[dict] = None
    meter: t.Optional[guest_meter.GuestMeter] = None
    log_text: t.Optional[str] = None
    baseline_at: t.Optional[float] = None
    cutoff: t.Optional[float] = None
    slack: float = 0.0
    observations: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    #: The network meter (controller clock); None while not started or when off.
    network_probe: str = probes.OFF
    net_meter: t.Optional[network_meter.NetworkMeter] = None
    net_baseline_at: t.Optional[float] = None
    net_cutoff: t.Optional[float] = None


@validation.add("required_services", services=[consts.Service.NOVA, consts.Service.NEUTRON])
@validation.add("image_valid_on_flavor", flavor_param="flavor", image_param="image")
@validation.add("metadata_floating_network")
@validation.add("metadata_meter_args")
@validation.add("required_platform", platform="openstack", admin=True, users=True)
@scenario.configure(
    name=NAME,
    platform="openstack",
    context={
        "cleanup@openstack": ["nova", "neutron"],
        "keypair@openstack": {},
        "allow_ssh@openstack": None,
    },
)
class BootAndLiveMigrate(vm_utils.VMScenario):

    def run(
        self,
        image: t.Annotated[str, types.Convert("glance_image")],
        flavor: t.Annotated[str, types.Convert("nova_flavor")],
        username: str = "cirros",
        password: str | None = None,
        port: t.Annotated[int, Field(ge=1, le=65535)] = 22,
        use_floating_ip: bool = True,
        floating_network: str | None = None,
        nics: list[dict[str, str]] | None = None,
        migrations: t.Annotated[int, Field(ge=1, le=1000)] = 3,
        block_migration: t.Literal["auto", True, False] = "auto",
        target_hosts: list[str] | None = None,
        metadata_url: t.Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None,
        ip_version: t.Literal[4, 6] = 4,
        guest_interface: t.Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]+$")] = "eth0",
        expect: t.Annotated[str, Field(min_length=1)] | None = None,
        probe_interval: t.Annotated[float, Field(gt=0, le=10)] = 0.2,
        fast_probe_interval: t.Annotated[float, Field(gt=0, le=10)] = 0.05,
        probe_timeout: t.Annotated[float, Field(gt=0, le=60)] = 1.0,
        http_tool: t.Literal["auto", "curl", "wget"] = "auto",
        workdir: str | None = None,
        baseline_probes: t.Annotated[int, Field(ge=1, le=1000)] = 5,
        recovery_probes: t.Annotated[int, Field(ge=1, le=1000)] = 5,
        recovery_timeout: t.Annotated[float, Field(gt=0)] = 60.0,
        ssh_timeout: t.Annotated[float, Field(gt=0)] = 120.0,
        server_kwargs: dict[str, t.Any] | None = None,
        network_probe: t.Literal["icmp", "tcp", "none"] = "icmp",
        network_probe_interval: t.Annotated[float, Field(gt=0, le=10)] = 0.1,
        network_probe_timeout: t.Annotated[float, Field(gt=0, le=60)] = 1.0,
    ) -> None:
        """Measure metadata-service downtime seen by a guest across live migrations.

        Boots a server, starts a meter inside it over SSH that probes the
        instance's own metadata on a fixed schedule (every probe bounded in
        time, checked for HTTP 200 and this instance's identity, its failure
        reason logged), waits for a healthy baseline, then live-migrates the
        server ``migrations`` times. After each migration it waits until nova
        shows the server ACTIVE on another host and metadata answers
        correctly again ``recovery_probes`` times in a row. The meter probes
        at ``fast_probe_interval`` from each request until recovery.

        Reported per iteration: total metadata downtime, longest outage and
        outage count (after the baseline); per migration: source and target
        host, nova's migration time, downtime with its error bound, longest
        outage, first failure and recovery offsets, and the guest pause
        estimated by comparing the guest clock (/proc/uptime) with the
        controller's. An outage still going on at ``recovery_timeout`` fails
        the iteration and is counted, as ongoing, up to that moment.

        Beside it, a network meter on the Rally host probes the guest's
        address (the floating IP, else the fixed one) on a fixed schedule,
        as Tempest does (network_probe), on the controller's clock: per
        migration it reports network downtime with its error bound, the
        longest network outage, and when the network was lost and back
        against metadata. Metadata back much later than the network is a
        metadata-path problem; both together mean the guest was off the
        network. The address must answer baseline_probes times in a row
        before the first migration, and recovery_probes times in a row
        (within recovery_timeout) after each one.
        Requires admin (live migration, hosts) and at least two compute hosts.
        Timeouts and poll intervals for nova come from rally.conf
        ``[openstack] nova_server_*``; meter timeouts from ``[metadata_meter]``.

        :param image: glance image to boot (name or regex: {"name": "cirros"});
            it needs a POSIX sh and curl or wget (CirrOS has both)
        :param flavor: nova flavor to boot ({"name": "m1.tiny"})
        :param username: SSH user in the guest
        :param password: SSH password; None uses the keypair context's key
        :param port: SSH port of the guest
        :param use_floating_ip: attach a floating IP to the server's IPv4
            fixed address on the guest network (the first nics entry, else
            the network context's) and reach the guest through it; False
            reaches the guest on its fixed address there of the ip_version
            family (IPv6 with ip_version 6)
        :param floating_network: external network for the floating IP
            (name or id); None picks the first external network
        :param nics: networks for the server, e.g. [{"net-id": ID}] or
            [{"net-name": NAME}]; the first one is the guest network (SSH,
            floating IP); None uses the network context's network
        :param migrations: live migrations per iteration (1-1000)
        :param block_migration: "auto" (nova decides from the instance's
            disks), true (copy disks: local storage) or false (shared
            storage or boot from volume). "auto" needs nova microversion
            2.25: with no version pinned in the environment the migration
            calls use the highest one nova supports; a pin below 2.25 fails
            the iteration with what to set
        :param target_hosts: compute hosts to migrate to, used in turn
            (the server's current host skipped); None lets the scheduler
            choose. force is never sent: below microversion 2.30 a named
            host always bypasses the scheduler (nova has no force then);
            from 2.30 the scheduler validates it
        :param metadata_url: URL the guest probes; None means
            http://169.254.169.254/openstack/latest/meta_data.json, or its
            IPv6 form http://[fe80::a9fe:a9fe%25IFACE]/... when ip_version is 6
        :param ip_version: 4 or 6: which metadata address the default URL
            uses, and without a floating IP the family of the fixed address
            Rally reaches the guest on
        :param guest_interface: guest interface scoping the IPv6 link-local
            metadata address (ip_version 6 only)
        :param expect: text a correct answer must contain; None means the
            server's UUID
        :param probe_interval: seconds between probe starts (> 0)
        :param fast_probe_interval: seconds between probe starts during a
            migration until recovery (> 0, at most probe_interval)
        :param probe_timeout: seconds one probe may take in total (> 0)
        :param http_tool: HTTP client in the guest: "auto" (busybox wget,
            else curl, else wget), "curl" or "wget"
        :param workdir: absolute directory in the guest for the meter's script,
            log and pid file (writable by username, room for the log);
            None means /tmp/rally-metadata-meter-<first 8 characters of the
            server id>; one meter at a time per directory; once its log is
            read, the meter's files are removed, and the directory if that
            leaves it empty
        :param baseline_probes: good probes in a row needed before the first
            migration (waits up to [metadata_meter] baseline_timeout seconds)
        :param recovery_probes: good probes in a row after nova finished that
            mean metadata recovered
        :param recovery_timeout: seconds after nova finished a migration to
            wait for recovery; an outage still going on then fails the
            iteration and counts up to this moment
        :param ssh_timeout: seconds to wait for SSH after boot
        :param server_kwargs: extra arguments for novaclient servers.create
            (e.g. {"availability_zone": "nova", "config_drive": true})
        :param network_probe: how the Rally host probes the guest's address:
            "icmp" (one ping per probe: needs ping on the Rally host and
            ICMP allowed by the security group, as the allow_ssh context
            does), "tcp" (a connect to the guest's SSH port, closed at once:
            where ICMP is filtered, and on the devcloud, whose loopback
            floating IPs the Rally host itself answers pings for) or "none"
            (no network meter; the network columns read n/a)
        :param network_probe_interval: seconds between network probe starts
            (> 0); the error bound of each outage edge
        :param network_probe_timeout: seconds one network probe may take (> 0)
        """
        # First, while locals() holds only the parameters.
        meter_args = scenario_args.MeterArguments.from_mapping(locals())
        conf = CONF.metadata_meter
        state = _Iteration(network_probe=network_probe)
        error: BaseException | None = None
        try:
            migrator = live_migration.LiveMigrator(
                self.admin_clients("nova"),
                client_at=lambda version: self.admin_clients("nova", version=version),
                timeout=CONF.openstack.nova_server_live_migrate_timeout,
                poll_interval=CONF.openstack.nova_server_live_migrate_poll_interval,
                prepoll_delay=CONF.openstack.nova_server_live_migrate_prepoll_delay,
            )
            migrator.negotiate(block_migration)
            migrator.require_hypervisors(conf.min_hypervisors)
            self._boot(state, image, flavor, nics, server_kwargs or {})
            with atomic.ActionTimer(self, ATTACH_IP):
                address = self._guest_address(state, use_floating_ip, floating_network,
                                              ip_version)
            lifetime = self._meter_lifetime(migrations, recovery_timeout)
            settings = meter_args.probe_settings(server_id=state.server.id, duration=lifetime)
            if network_probe != probes.OFF:
                state.net_meter = network_meter.NetworkMeter(probes.NetworkProbeSettings(
                    network_probe, address, port, network_probe_interval,
                    network_probe_timeout, duration=lifetime))
            ssh = guest_ssh.GuestSSH(username, address, port=port, password=password,
                                     pkey=self.context["user"]["keypair"]["private"])
            state.meter = guest_meter.GuestMeter(
                ssh, settings,
                command_timeout=conf.ssh_command_timeout,
                start_timeout=conf.meter_start_timeout,
                poll_interval=conf.log_poll_interval,
            )
            # Both meters stop, whatever happens, when these blocks are left.
            with state.meter as meter, state.net_meter or contextlib.nullcontext() as net:
                self._wait_for_ssh(ssh, timeout=ssh_timeout)
                with atomic.ActionTimer(self, START_METER):
                    meter.start()
                    if net is not None:
                        net.start()
                with atomic.ActionTimer(self, BASELINE):
                    state.baseline_at = self._baseline(meter, baseline_probes,
                                                       conf.baseline_timeout)
                    if net is not None:
                        state.net_baseline_at = net.wait_for_baseline(baseline_probes,
                                                                      conf.baseline_timeout)
                with atomic.ActionTimer(self, MIGRATIONS):
                    for index in range(1, migrations + 1):
                        self._migrate_once(state, meter, migrator, index, block_migration,
                                           target_hosts, recovery_probes, recovery_timeout)
                with atomic.ActionTimer(self, COLLECT):
                    state.log_text = meter.stop()
                    if net is not None:
                        net.stop()
        except BaseException as e:
            error = e
            raise
        finally:
            self._finish(state, error)

    # -- steps ------------------------------------------------------------

    def _boot(self, state, image, flavor, nics, server_kwargs):
        """Boot like NovaScenario._boot_server, but keep the server even if it never
        becomes ACTIVE, so that it is deleted whatever fails."""
        kwargs = dict(server_kwargs)
        keypair = self.context.get("user", {}).get("keypair")
        if keypair and "key_name" not in kwargs:
            kwargs["key_name"] = keypair["name"]
        secgroup = self.context.get("user", {}).get("secgroup")
        if secgroup:
            groups = list(kwargs.get("security_groups") or [])
            if secgroup["name"] not in groups:
                groups.append(secgroup["name"])
            kwargs["security_groups"] = groups
        nics = [dict(nic) for nic in nics] if nics else self._pick_random_nic()
        if nics:
            state.network = self._network_name(nics[0])
        for nic in nics or ():
            if not nic.get("net-id") and nic.get("net-name"):
                nic["net-id"] = self._get_network_id(nic.pop("net-name"))
        if nics:
            kwargs["nics"] = nics
        with atomic.ActionTimer(self, BOOT):
            server = self.clients("nova").servers.create(
                self.generate_random_name(), image, flavor, **kwargs)
            state.server = server
            self.sleep_between(CONF.openstack.nova_server_boot_prepoll_delay)
            state.server = task_utils.wait_for_status(
                server,
                ready_statuses=["ACTIVE"],
                update_resource=task_utils.get_from_manager(),
                timeout=CONF.openstack.nova_server_boot_timeout,
                check_interval=CONF.openstack.nova_server_boot_poll_interval,
            )

    def _network_name(self, nic: dict) -> t.Optional[str]:
        """The name of a ``nics`` entry's network: nova keys ``server.addresses`` by it."""
        net_id = nic.get("net-id")
        if not net_id:
            return nic.get("net-name")
        for net in self.context.get("tenant", {}).get("networks", ()):
            if net.get("id") == net_id and net.get("name"):
                return net["name"]
        # The same list (and cache) NovaScenario._get_network_id uses for net-name.
        if not getattr(self, "existed_networks", None):
            self.existed_networks = self.clients("neutron").list_networks()["networks"]
        return next((net["name"] for net in self.existed_networks if net["id"] == net_id),
                    None)

    def _guest_address(self, state, use_floating_ip, floating_network, ip_version) -> str:
        server = state.server
        if not server.networks:
            raise RuntimeError(
                f"Server {server.name} is not connected to any network: use the network "
                f"context or give nics.")
        fixed = networks.pick_fixed_address(
            server.addresses, network=state.network, use_floating_ip=use_floating_ip,
            ip_version=ip_version)
        if not use_floating_ip:
            return fixed.address
        fip = self.neutron.create_floatingip(floating_network=floating_network)
        state.floating_ip = {"id": fip["id"], "ip": fip["floating_ip_address"]}
        self._associate_floating_ip(server, fip, fixed_address=fixed.address)
        return fip["floating_ip_address"]

    @atomic.action_timer("nova.associate_floating_ip")
    def _associate_floating_ip(self, server, address, fixed_address=None):
        """NovaScenario's, but on the port that holds ``fixed_address`` (required here).

        The base class gives the floating IP to the server's first port, which
        fails (or picks the wrong NIC) when the server has several.
        """
        port = networks.port_for_address(self.neutron.list_ports(device_id=server.id),
                                         fixed_address)
        floating_ip = self.neutron.associate_floatingip(
            port_id=port["id"], floatingip_id=address["id"], fixed_ip_address=fixed_address)
        task_utils.wait_for(server,
                            is_ready=self.check_ip_address(floating_ip["floating_ip_address"]),
                            update_resource=task_utils.get_from_manager())
        server.addresses = server.manager.get(server.id).addresses

    @staticmethod
    def _baseline(meter: guest_meter.GuestMeter, needed: int, timeout: float) -> float:
        snapshot = meter.wait_for_baseline(needed, timeout)
        return analysis.first_healthy_streak(snapshot.log.records, needed).start

    def _migrate_once(self, state, meter, migrator, index, block_migration, target_hosts,
                      recovery_probes, recovery_timeout):
        server_id = state.server.id
        source = migrator.host_of(server_id)
        host = live_migration.pick_target(target_hosts, source, index)
        meter.set_fast(True)
        before = meter.clock_sample()
        state.slack = max(state.slack, before.error)
        with atomic.ActionTimer(self, LIVE_MIGRATE):
            requested = time.monotonic()
            observation = report.MigrationObservation(index, source, before.to_guest(requested),
                                                     server=server_id,
                                                     controller_requested_at=requested)
            state.observations.append(observation)
            try:
                migrator.request(server_id, block_migration, host)
                target = migrator.wait_for_host_change(server_id, source, requested)
            except Exception as e:
                state.observations[-1] = dataclasses.replace(
                    observation, error=str(e) or type(e).__name__,
                    finished_at=before.to_guest(time.monotonic()))
                raise
            done = time.monotonic()
        with atomic.ActionTimer(self, WAIT_RECOVERY):
            try:
                recovery = meter.wait_for_recovery(recovery_probes, done, recovery_timeout)
            except Exception as e:
                # Nova moved the server but recovery was never observed: no measurement.
                state.observations[-1] = dataclasses.replace(
                    observation, target_host=target, duration=done - requested,
                    error="metadata recovery could not be observed: "
                          + (str(e) or type(e).__name__),
                    finished_at=before.to_guest(time.monotonic()))
                raise
            # A fresh sample taken as ``before`` was, not the recovery read's clock:
            # a poll does more than read the clock, so its reading sits elsewhere in
            # its round trip (within its bound, but biased). Without recovery the
            # guest may be unreachable: the last read's clock is all there is.
            after = meter.clock_sample() if recovery.recovered else recovery.snapshot.clock
            pause = clocklib.estimate_pause(before, after)
            state.observations[-1] = dataclasses.replace(
                observation, target_host=target, duration=done - requested,
                finished_at=recovery.snapshot.guest_time, pause=pause.pause,
                pause_error=pause.error, recovered=recovery.recovered)
            if not recovery.recovered:
                state.cutoff = recovery.snapshot.guest_time
                state.net_cutoff = time.monotonic()
                raise MetadataNotRecovered(
                    f"Metadata did not recover within {recovery_timeout:g} s after live "
                    f"migration {index} ({source} -> {target}); the outage is counted as "
                    f"ongoing up to that moment. See the '{report.NOTES_TITLE}' output "
                    f"for the failure reasons.")
            self._wait_network_recovery(state, index, source, target, recovery_probes, done,
                                        recovery_timeout)
            meter.set_fast(False)

    @staticmethod
    def _wait_network_recovery(state, index, source, target, needed, done, timeout):
        """After metadata recovered: the guest's address answers again, in the same time."""
        if state.net_meter is None:
            return
        if not state.net_meter.wait_for_recovery(needed, done, done + timeout):
            state.net_cutoff = time.monotonic()
            raise NetworkNotRecovered(
                f"The guest's address did not answer the network meter "
                f"({state.net_meter.settings.target}) {needed} times in a row within "
                f"{timeout:g} s after live migration {index} ({source} -> {target}); the "
                f"network outage is counted as ongoing up to that moment. See the "
                f"'{report.NOTES_TITLE}' output for the failure reasons.")

    def _meter_lifetime(self, migrations: int, recovery_timeout: float) -> float:
        """A bound after which an orphaned meter stops by itself (never reached normally)."""
        per_migration = CONF.openstack.nova_server_live_migrate_timeout + recovery_timeout + 60
        conf = CONF.metadata_meter
        return round(conf.meter_start_timeout + conf.baseline_timeout
                     + migrations * per_migration + 600)

    # -- always -------------------------------------------------------------

    def _finish(self, state: _Iteration, error: BaseException | None) -> None:
        meter = state.meter
        if state.log_text is None and meter is not None:
            # The final log; if stopping failed, the last log read still tells what happened.
            state.log_text = meter.final_log or (
                meter.last_snapshot.text if meter.last_snapshot else None)
        if error is not None:
            state.notes.append(f"The iteration failed: {type(error).__name__}: {error}")
        try:
            self._report(state)
        finally:
            self._cleanup(state, failed=error is not None)

    def _report(self, state: _Iteration) -> None:
        try:
            summary = report.summarize(
                state.log_text, state.observations, baseline_at=state.baseline_at,
                cutoff=state.cutoff, slack=state.slack, notes=state.notes,
                network=self._network_measurement(state))
            additive, complete = report.charts(summary)
        except Exception:
            LOG.exception("Could not build the metadata downtime report")
            additive, complete = report.charts(report.IterationReport(
                report.IterationFigures(measured=False),
                notes=("The meter log could not be analysed; see rally's log.",)))
        for chart in additive:
            self.add_output(additive=chart)
        for chart in complete:
            self.add_output(complete=chart)

    @staticmethod
    def _network_measurement(state: _Iteration) -> t.Optional[report.NetworkMeasurement]:
        if state.network_probe == probes.OFF:
            return None
        net = state.net_meter
        if net is None:
            log, target = None, f"network_probe {state.network_probe}"
        else:
            # Stopped by now (the with block is left); whatever it read if stopping failed.
            log, target = net.final_log or net.text or None, net.settings.target
        return report.NetworkMeasurement(log, target,
                                         baseline_at=state.net_baseline_at,
                                         cutoff=state.net_cutoff)

    def _cleanup(self, state: _Iteration, failed: bool) -> None:
        errors = []
        if state.floating_ip:
            try:
                self.neutron.delete_floatingip(state.floating_ip["id"])
            except Exception as e:
                errors.append(e)
                LOG.warning(f"Could not delete floating IP {state.floating_ip['ip']}: {e}")
        server = state.server
        if server is not None:
            try:
                self._delete_server(server)
            except Exception as e:
                errors.append(e)
                LOG.warning(f"Could not delete server {server.id}: {e}")
        if errors and not failed:
            raise errors[0]
