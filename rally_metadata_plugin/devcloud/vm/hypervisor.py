"""VM guests: one QEMU per instance, and real live migrations.

:class:`VmGuests` follows the model as a
:class:`~..model.backend.CloudListener` (an ACTIVE server gets a VM on its
host, a floating IP gets routed to it, a deleted server loses everything)
and is the migration engine's :class:`~..migration_engine.Hypervisor`:
``os-migrateLive`` migrates the QEMU for real (:meth:`live_migrate`):

1. on the destination host: the guest's tap, its metadata listener and
   the floating IP's NAT; a QEMU started with ``-incoming defer``;
2. on the source: QEMU's capabilities (``pause-before-switchover``,
   ``auto-converge``) and parameters (``downtime-limit``,
   ``max-bandwidth``) from the profile's ``vm:`` knobs; a "paused"
   migration ``stop`` s the VM first; ``migrate`` over a unix socket;
3. pre-copy runs (status MIGRATING, host the source) until QEMU pauses the
   VM for the switchover and waits (``pre-switchover``): the model switches
   the host (the destination's metadata outage starts there) and the
   floating IP's route moves, then ``migrate-continue``; the destination
   resumes the guest (``cont`` after a paused migration);
4. the source QEMU is killed and its host's tap, listener and NAT removed.

The ground truth per migration comes from QEMU: ``query-migrate``'s
figures, and the guest's real pause between the source's ``STOP`` event and
the destination's ``RESUME`` event (QMP timestamps, converted to the
devcloud's ``CLOCK_BOOTTIME``).

Instances are changed by one worker thread (boots, floating IPs) and by
the migration threads; a deletion kills the QEMUs at once, whoever holds
the instance.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.migrations import Migration
from rally_metadata_plugin.devcloud.model.outages import Outage
from rally_metadata_plugin.devcloud.vm import qemu as qemu_mod
from rally_metadata_plugin.devcloud.vm.image import GuestImage
from rally_metadata_plugin.devcloud.vm.knobs import VmKnobs
from rally_metadata_plugin.devcloud.vm.metadata import VmMetadataService
from rally_metadata_plugin.devcloud.vm.network import HostNetwork
from rally_metadata_plugin.devcloud.vm.qemu import QemuError, QemuProcess, VmSpec
from rally_metadata_plugin.devcloud.vm.qmp import QmpError, QmpEvent

LOG = logging.getLogger(__name__)

#: how long QEMU may take for a migration before it is cancelled
MIGRATION_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class VmSettings:
    accel: str
    memory_mb: int
    boot_timeout: float
    user: str
    knobs: VmKnobs


@dataclasses.dataclass(frozen=True)
class MigrationOutcome:
    """``completed``, ``cancelled`` (aborted in pre-copy: the guest stays on
    its source), ``failed`` (QEMU's error in ``error``) or ``gone`` (the
    server was deleted meanwhile); ``truth`` adds to the truth record."""

    status: str
    truth: dict
    error: str = ""


@dataclasses.dataclass
class Instance:
    server_id: str
    host: str
    spec: VmSpec
    qemu: QemuProcess
    fixed_ip: str
    run_dir: Path
    fip: str | None = None
    migrating: bool = False
    deleted: bool = False
    destination: QemuProcess | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def _realtime_to_boottime(stamp: float) -> float:
    return stamp + (boottime.now() - time.time())


def _migration_status(*statuses: str) -> Callable[[QmpEvent], bool]:
    return lambda e: e.name == "MIGRATION" and e.data.get("status") in statuses


class VmGuests:
    """The VM guests of a devcloud (see the module docstring)."""

    def __init__(self, backend: CloudBackend, network: HostNetwork,
                 metadata: VmMetadataService, image: GuestImage,
                 settings: VmSettings, run_dir: Path,
                 socket_dir: Path) -> None:
        self._backend = backend
        self._network = network
        self._metadata = metadata
        self._image = image
        self.settings = settings
        self._run_dir = run_dir
        self._sockets = socket_dir
        self._boots_log = run_dir.parent / "vm-boots.jsonl"
        self._instances: dict[str, Instance] = {}
        self._lock = threading.Lock()
        self._work: queue.Queue = queue.Queue()
        self._stopped = threading.Event()
        self._worker = threading.Thread(target=self._serve_work,
                                        name="vm-guests", daemon=True)
        self._worker.start()
        self.name_prefix = network.prefix

    # -- CloudListener ------------------------------------------------------------

    def server_changed(self, server: Server) -> None:
        # the metadata server's copy first: a guest may ask once it runs
        self._metadata.server_changed(server)
        if server.status != "BUILD":
            self._work.put(server.id)

    def server_deleted(self, server: Server) -> None:
        self._metadata.server_deleted(server)
        with self._lock:
            instance = self._instances.pop(server.id, None)
        if instance is not None:
            self._destroy(instance)

    def outage_added(self, outage: Outage) -> None:
        self._metadata.outage_added(outage)

    # -- the engine's Freezer: QEMU pauses the guest itself -------------------------

    def freeze(self, server_id: str) -> None:
        pass

    def thaw(self, server_id: str) -> None:
        pass

    # -- boots and floating IPs (the worker thread) --------------------------------

    def _serve_work(self) -> None:
        while not self._stopped.is_set():
            try:
                server_id = self._work.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._reconcile(server_id)
            except Exception:
                LOG.exception("VM guest of server %s", server_id)

    def _reconcile(self, server_id: str) -> None:
        server = self._backend.compute.find_server(server_id)
        if server is None or server.status == "BUILD" or self._stopped.is_set():
            return
        with self._lock:
            instance = self._instances.get(server_id)
        if instance is None:
            instance = self._boot(server)
            if instance is None:
                return
        with instance.lock:
            if instance.migrating or instance.deleted:
                return               # the migration publishes at its end
            self._publish_floating_ip(instance)

    def _boot(self, server: Server) -> Instance | None:
        fixed = next((ip for ip in self._backend.server_ports.fixed_ips(
            server.id) if ":" not in ip), "")
        ports = self._backend.server_ports.ports(server.id)
        mac = ports[0].mac_address if ports else "fa:16:3e:00:00:01"
        tap = f"tap{server.id[:8]}"
        spec = VmSpec(name=f"{self.name_prefix}-{server.id}",
                      image=self._image, accel=self.settings.accel,
                      memory_mb=self.settings.memory_mb, tap=tap, mac=mac,
                      fixed_ip=fixed, user=self.settings.user,
                      dirty_memory_mb=self.settings.knobs.dirty_memory_mb,
                      boot_id=server.id[:8])
        run_dir = self._run_dir / server.id
        host = server.host
        self._network.add_tap(host, tap, fixed)
        self._metadata.attach(host, server.id, tap)
        process = QemuProcess(spec, run_dir, self._network.namespace(host),
                              "boot", self._sockets)
        instance = Instance(server.id, host, spec, process, fixed, run_dir)
        with self._lock:
            if self._backend.compute.find_server(server.id) is None:
                self._metadata.detach(host, server.id)
                self._network.remove_tap(host, tap)
                return None
            self._instances[server.id] = instance
        try:
            process.start()
        except QemuError as error:
            LOG.error("server %s: %s", server.id, error)
            self._log_boot(instance, None, str(error))
            return instance
        threading.Thread(target=self._watch_boot, args=(instance, process),
                         name=f"vm-boot-{server.id[:8]}", daemon=True).start()
        return instance

    def _watch_boot(self, instance: Instance, process: QemuProcess) -> None:
        try:
            seconds = process.wait_ready(self.settings.boot_timeout)
        except QemuError as error:
            if not instance.deleted and not self._stopped.is_set():
                LOG.error("server %s: %s", instance.server_id, error)
                self._log_boot(instance, None, str(error))
            return
        LOG.info("server %s booted in %.2f s", instance.server_id, seconds)
        self._log_boot(instance, seconds, None)

    def _log_boot(self, instance: Instance, seconds: float | None,
                  error: str | None) -> None:
        record = {"server_id": instance.server_id, "host": instance.host,
                  "accel": instance.spec.accel,
                  "boot_seconds": None if seconds is None else round(seconds, 3),
                  "error": error}
        with self._lock, self._boots_log.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def boots(self) -> list[dict]:
        try:
            lines = self._boots_log.read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def _publish_floating_ip(self, instance: Instance) -> None:
        """Make the instance's floating IP (the model's) reach it; called
        with the instance's lock held."""
        fips = self._backend.l3.server_floating_ips(instance.server_id)
        wanted = fips[0] if fips and instance.fixed_ip else None
        if wanted == instance.fip:
            return
        if instance.fip is not None:
            self._network.unroute_floating_ip(instance.fip)
            self._network.withdraw_floating_ip(instance.host, instance.fip,
                                               instance.fixed_ip)
            instance.fip = None
        if wanted is not None:
            self._network.publish_floating_ip(instance.host, wanted,
                                              instance.fixed_ip)
            self._network.route_floating_ip(wanted, instance.host)
            instance.fip = wanted

    # -- deletion ------------------------------------------------------------------

    def _destroy(self, instance: Instance) -> None:
        instance.deleted = True
        # killed first, without the lock a migration may hold
        for process in (instance.qemu, instance.destination):
            if process is not None:
                process.kill()
        with instance.lock:
            hosts = {instance.host}
            if instance.destination is not None:
                hosts.add(self._host_of(instance.destination))
            if instance.fip is not None:
                self._network.unroute_floating_ip(instance.fip)
            for host in hosts:
                self._metadata.detach(host, instance.server_id)
                if instance.fip is not None:
                    self._network.withdraw_floating_ip(host, instance.fip,
                                                       instance.fixed_ip)
                self._network.remove_tap(host, instance.spec.tap)

    def _host_of(self, process: QemuProcess) -> str:
        return process.namespace[len(self._network.prefix) + 1:]

    def stop(self) -> None:
        """Kill every QEMU (the devcloud is stopping); the namespaces are
        the caller's to delete."""
        self._stopped.set()
        with self._lock:
            instances, self._instances = list(self._instances.values()), {}
        for instance in instances:
            instance.deleted = True
            for process in (instance.qemu, instance.destination):
                if process is not None:
                    process.kill()
        qemu_mod.kill_own_processes(self.name_prefix + "-")
        self._metadata.stop()

    def processes(self) -> dict[str, list[int]]:
        """Live QEMU processes by server (a server's name is its id)."""
        found: dict[str, list[int]] = {}
        prefix = self.name_prefix + "-"
        for pid in qemu_mod.own_processes(prefix):
            name = qemu_mod.process_name(pid) or ""
            server_id = name[len(prefix):]
            if not server_id.startswith("probe-"):
                found.setdefault(server_id, []).append(pid)
        return found

    def leftovers(self) -> list[int]:
        return qemu_mod.own_processes(self.name_prefix + "-")

    # -- live migration ------------------------------------------------------------

    def live_migrate(self, migration: Migration, switch_over: Callable[[], bool],
                     abort: threading.Event) -> MigrationOutcome:
        """Migrate the server's QEMU to ``migration.destination``;
        ``switch_over`` is called while the guest is paused, before it
        resumes on the destination (it switches the model's host)."""
        with self._lock:
            instance = self._instances.get(migration.server_id)
        if instance is None or instance.deleted:
            return MigrationOutcome("gone", {})
        with instance.lock:
            instance.migrating = True
        try:
            return self._migrate(instance, migration, switch_over, abort)
        except (QmpError, QemuError, OSError) as error:
            if instance.deleted or self._stopped.is_set():
                return MigrationOutcome("gone", {})
            LOG.exception("migration %s", migration.uuid)
            self._undo_destination(instance, migration.destination)
            return MigrationOutcome("failed", {}, f"QEMU: {error}")
        finally:
            with instance.lock:
                instance.migrating = False
            if not instance.deleted:
                self._work.put(instance.server_id)    # floating IP changes

    def _prepare_destination(self, instance: Instance, host: str,
                             index: int) -> QemuProcess:
        self._network.add_tap(host, instance.spec.tap, instance.fixed_ip)
        self._metadata.attach(host, instance.server_id, instance.spec.tap)
        if instance.fip is not None:
            self._network.publish_floating_ip(host, instance.fip,
                                              instance.fixed_ip)
        destination = QemuProcess(instance.spec, instance.run_dir,
                                  self._network.namespace(host),
                                  f"migration-{index}", self._sockets,
                                  incoming=True)
        instance.destination = destination
        return destination.start()

    def _undo_destination(self, instance: Instance, host: str) -> None:
        destination, instance.destination = instance.destination, None
        if destination is not None:
            destination.kill()
        if instance.deleted:
            return
        self._metadata.detach(host, instance.server_id)
        if instance.fip is not None:
            self._network.withdraw_floating_ip(host, instance.fip,
                                               instance.fixed_ip)
            self._network.route_floating_ip(instance.fip, instance.host)
        self._network.remove_tap(host, instance.spec.tap)

    def _migrate(self, instance: Instance, migration: Migration,
                 switch_over: Callable[[], bool],
                 abort: threading.Event) -> MigrationOutcome:
        knobs = self.settings.knobs
        source_host, host = instance.host, migration.destination
        destination = self._prepare_destination(instance, host, migration.index)
        source = instance.qemu
        sq, dq = source.qmp, destination.qmp
        events = [{"capability": "events", "state": True}]
        dq.execute("migrate-set-capabilities", capabilities=events)
        sq.execute("migrate-set-capabilities", capabilities=events + [
            {"capability": "pause-before-switchover", "state": True},
            {"capability": "auto-converge", "state": knobs.auto_converge}])
        sq.execute("migrate-set-parameters", **{
            "downtime-limit": knobs.downtime_limit_ms,
            "max-bandwidth": knobs.max_bandwidth_mib << 20})
        channel = self._sockets / f"{instance.spec.boot_id}-{migration.index}.migration"
        channel.unlink(missing_ok=True)
        dq.execute("migrate-incoming", uri=f"unix:{channel}")
        s_mark, d_mark = sq.mark(), dq.mark()
        truth: dict = {"qemu": {"knobs": knobs.as_dict(),
                                "accel": instance.spec.accel}}
        if knobs.paused:
            sq.execute("stop")
        sq.execute("migrate", uri=f"unix:{channel}")
        deadline = time.monotonic() + MIGRATION_TIMEOUT
        event = None
        while event is None:
            event = sq.wait_event(_migration_status(
                "pre-switchover", "failed", "cancelled"), 0.05, s_mark)
            if event is None and (abort.is_set() or time.monotonic() > deadline):
                return self._cancel(instance, migration, truth, knobs,
                                    timed_out=not abort.is_set())
        if event.data["status"] != "pre-switchover":
            return self._failed(instance, migration, truth, knobs)
        truth["switchover_at"] = boottime.now()
        on_host = switch_over()
        if instance.fip is not None:
            self._network.route_floating_ip(instance.fip, host)
        truth["switchover_done_at"] = boottime.now()
        sq.execute("migrate-continue", state="pre-switchover")
        end = sq.wait_event(_migration_status("completed", "failed"), 30,
                            s_mark)
        if end is None or end.data["status"] != "completed":
            if instance.fip is not None:
                self._network.route_floating_ip(instance.fip, source_host)
            return self._failed(instance, migration, truth, knobs)
        truth["qemu"].update(self._figures(self._final_figures(sq)))
        if knobs.paused:
            dq.wait_event(_migration_status("completed"), 30, d_mark)
            dq.execute("cont")
        resumed = dq.wait_event(lambda e: e.name == "RESUME", 30, d_mark)
        stopped = [e for e in sq.events("STOP", s_mark)]
        if stopped and resumed:
            truth["pause_start"] = _realtime_to_boottime(stopped[0].timestamp)
            truth["pause_end"] = _realtime_to_boottime(resumed.timestamp)
        # the source's part is over: nova's post-live-migration cleanup
        with instance.lock:
            instance.qemu, instance.destination = destination, None
            instance.host = host
        source.kill()
        self._metadata.detach(source_host, instance.server_id)
        if instance.fip is not None:
            self._network.withdraw_floating_ip(source_host, instance.fip,
                                               instance.fixed_ip)
        self._network.remove_tap(source_host, instance.spec.tap)
        return MigrationOutcome("completed" if on_host else "gone", truth)

    @staticmethod
    def _final_figures(qmp, timeout: float = 2.0) -> dict:
        """``query-migrate`` once QEMU has computed the completed migration's
        figures: it announces ``completed`` before it computes the downtime
        and the total time (a query in between reads a downtime of 0)."""
        deadline = time.monotonic() + timeout
        while True:
            info = qmp.execute("query-migrate")
            if info.get("downtime") or time.monotonic() > deadline:
                return info
            time.sleep(0.01)

    @staticmethod
    def _figures(info: dict) -> dict:
        ram = info.get("ram", {})
        return {"status": info.get("status"),
                "setup_time_ms": info.get("setup-time"),
                "total_time_ms": info.get("total-time"),
                "downtime_ms": info.get("downtime"),
                "expected_downtime_ms": info.get("expected-downtime"),
                "ram_transferred_bytes": ram.get("transferred"),
                "ram_dirty_sync_count": ram.get("dirty-sync-count"),
                "cpu_throttle_percentage": info.get("cpu-throttle-percentage", 0)}

    def _cancel(self, instance: Instance, migration: Migration, truth: dict,
                knobs: VmKnobs, timed_out: bool) -> MigrationOutcome:
        source = instance.qemu
        mark = source.qmp.mark()
        source.qmp.execute("migrate_cancel")
        source.qmp.wait_event(_migration_status("cancelled", "failed",
                                                "completed"), 10, mark)
        truth["qemu"].update(self._figures(source.qmp.execute("query-migrate")))
        if knobs.paused:
            source.qmp.execute("cont")
        self._undo_destination(instance, migration.destination)
        if timed_out:
            return MigrationOutcome("failed", truth,
                                    f"QEMU: pre-copy did not converge within "
                                    f"{MIGRATION_TIMEOUT:g} s")
        return MigrationOutcome("cancelled", truth)

    def _failed(self, instance: Instance, migration: Migration, truth: dict,
                knobs: VmKnobs) -> MigrationOutcome:
        info = instance.qemu.qmp.execute("query-migrate")
        truth["qemu"].update(self._figures(info))
        if knobs.paused or instance.qemu.qmp.execute(
                "query-status").get("status") != "running":
            instance.qemu.qmp.execute("cont")
        self._undo_destination(instance, migration.destination)
        return MigrationOutcome("failed", truth,
                                f"QEMU: {info.get('error-desc', 'migration failed')}")
