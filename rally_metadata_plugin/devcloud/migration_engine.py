"""Live-migration engine: runs each migration as a :mod:`.profiles` draw says
and records the ground truth.

Phases of one migration (all instants on ``CLOCK_BOOTTIME``):

1. ``requested_at``: the API accepted ``os-migrateLive``; status MIGRATING,
   host unchanged (the pre-copy phase, of drawn length). From microversion
   2.34 nova-conductor's pre-checks run ``precheck_seconds`` into it (before,
   the API ran them); a failed one (local disks without block migration, a
   profile's ``precheck_error``) ends the migration there: record ``error``,
   server ACTIVE on its source, no pause, no outage. Then the record is
   ``preparing`` for ``prepare_seconds`` and ``running`` until the pause.
   An abort (``DELETE /servers/{id}/migrations/{mid}``) before the pause
   ends it too: ``cancelled``, ACTIVE on the source, ``aborted_at`` in the
   ground truth.
2. ``pause_start``..``pause_end``: switchover pause. Every guest process is
   SIGSTOPped; while frozen the host switches to the destination and the
   destination's metadata outage (if any) is scheduled to start ``delay``
   after the switch, and the plan's :class:`SwitchoverEffect` s happen (a
   guest reboot, an SSH blackhole). ``pause_end`` is taken once the guest is
   thawed.
3. ``completed_at``: status back to ACTIVE on the destination (what rally
   waits for).

Or the migration fails after pre-copy: status ERROR with a fault, host
unchanged, no pause and no outage.

With a :class:`Hypervisor` (the VM guests, :mod:`.vm`), phases 1 (after the
pre-checks) and 2 are real: the hypervisor migrates the guest and calls
back while the guest is paused to switch the host over; the drawn pre-copy
and pause are not used, and the truth record gets the hypervisor's figures.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path
from typing import Callable, Protocol, Sequence

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.actions import Failure
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.migrations import Migration
from rally_metadata_plugin.devcloud.model.outages import Outage
from rally_metadata_plugin.devcloud.profiles import (FaultSpec, MigrationPlan,
                                                     Profile)

LOG = logging.getLogger(__name__)


class Freezer(Protocol):
    """Pauses and resumes every process of a guest."""

    def freeze(self, server_id: str) -> None:
        """Stop the guest; returns once every process is stopped."""

    def thaw(self, server_id: str) -> None:
        """Resume the guest."""


class SwitchoverEffect(Protocol):
    """Does what a plan says the switchover does to a guest beyond the
    pause (a reboot, SSH connections going silent)."""

    def switched_over(self, server_id: str, plan: MigrationPlan) -> dict:
        """Called while the guest is frozen on the destination; returns the
        fields it adds to the truth record."""


class Hypervisor(Protocol):
    """Migrates a guest for real (:class:`.vm.hypervisor.VmGuests`)."""

    def live_migrate(self, migration: Migration,
                     switch_over: Callable[[], bool],
                     abort: threading.Event):
        """Migrate; call ``switch_over`` while the guest is paused, before
        it resumes on the destination (True: the model switched). Returns
        a :class:`.vm.hypervisor.MigrationOutcome`."""


class TruthLog:
    """Ground truth, one JSON object per migration.

    Finished migrations are appended to ``path`` (JSON lines, flushed at
    once); :meth:`records` also lists migrations still running.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._finished: list[dict] = []
        self._running: dict[str, dict] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def started(self, record: dict) -> None:
        with self._lock:
            self._running[record["migration_id"]] = record

    def finished(self, record: dict) -> None:
        with self._lock:
            self._running.pop(record["migration_id"], None)
            self._finished.append(record)
            with self.path.open("a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict]:
        """Finished migrations in completion order, then running ones."""
        with self._lock:
            return ([dict(r) for r in self._finished] +
                    [dict(r) for r in self._running.values()])


class MigrationEngine:
    """The :class:`~.model.migrations.Migrator` of the devcloud.

    Random draws come from a generator seeded with ``(seed, server creation
    order, migration index)``, so a run is reproducible per server even
    when migrations of several servers interleave differently.
    """

    def __init__(self, backend: CloudBackend, profile: Profile, seed: int,
                 freezer: Freezer, truth: TruthLog,
                 effects: Sequence[SwitchoverEffect] = (),
                 hypervisor: Hypervisor | None = None) -> None:
        self._backend = backend
        self._profile = profile
        self._seed = seed
        self._freezer = freezer
        self._truth = truth
        self._effects = tuple(effects)
        self._hypervisor = hypervisor
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._aborts: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _rng(self, server: Server, index: int, purpose: str) -> random.Random:
        return random.Random(f"{self._seed}/{server.seq}/{index}/{purpose}")

    def choose_destination(self, server: Server,
                           candidates: list[str]) -> str:
        rng = self._rng(server, server.migrations + 1, "destination")
        return rng.choice(sorted(candidates))

    def _plan(self, migration: Migration) -> MigrationPlan | None:
        """The migration's draw (the same every time it is asked for)."""
        server = self._backend.compute.find_server(migration.server_id)
        if server is None:
            return None
        return self._profile.draw(self._rng(server, migration.index, "plan"))

    def precheck_failure(self, migration: Migration) -> Failure | None:
        plan = self._plan(migration)
        spec = plan.precheck_error if plan else None
        return None if spec is None else Failure(spec.exception, spec.message)

    def abort(self, migration: Migration) -> None:
        with self._lock:
            event = self._aborts.get(migration.uuid)
        if event is not None:
            event.set()

    def start(self, migration: Migration,
              failure: Failure | None = None) -> None:
        plan = self._plan(migration)
        if plan is None:
            return
        record = {
            "migration_id": migration.uuid,
            "server_id": migration.server_id,
            "migration_index": migration.index,
            "source": migration.source,
            "destination": migration.destination,
            "profile": self._profile.name,
            "clock": "CLOCK_BOOTTIME",
            "requested_at": migration.requested_at,
            "pause_start": None, "pause_end": None,
            "outage_start": None, "outage_end": None, "kind": None,
            "guest_reboot_at": None, "ssh_blackhole_start": None,
            "ssh_blackhole_end": None,
            "network_loss_start": None, "network_loss_end": None,
            "completed_at": None, "status": "running", "fault": None,
            "block_migration": migration.block_migration,
            "aborted_at": None,
        }
        self._truth.started(record)
        with self._lock:
            self._aborts[migration.uuid] = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(migration, plan, record, failure),
            name=f"migration-{migration.uuid[:8]}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Abort running migrations (the devcloud is shutting down)."""
        self._stopped.set()
        for thread in list(self._threads):
            thread.join(timeout)

    def _sleep_until(self, deadline: float,
                     abort: threading.Event | None = None) -> bool:
        """Sleep until ``deadline``; False if stopped (or the migration
        aborted) meanwhile."""
        while not self._stopped.is_set():
            if abort is not None and abort.is_set():
                return False
            remaining = deadline - boottime.now()
            if remaining <= 0:
                return True
            (abort or self._stopped).wait(min(remaining, 0.05 if abort
                                              else 0.5))
        return False

    def _run(self, migration: Migration, plan: MigrationPlan, record: dict,
             failure: Failure | None) -> None:
        migrations = self._backend.migrations
        with self._lock:
            abort = self._aborts[migration.uuid]
        start = migration.requested_at
        stages = (
            # (until, what then); each stage can be cut short by an abort
            (start + self._profile.precheck_seconds, self._checks_done),
            (start + self._profile.precheck_seconds, lambda m, f:
             migrations.advance(m, "preparing")),
            (start + self._profile.precheck_seconds
             + self._profile.prepare_seconds, lambda m, f:
             migrations.advance(m, "running")),
        )
        try:
            for until, step in stages:
                if not self._sleep_until(until, abort):
                    self._stopped_early(migration, record, abort)
                    return
                if not step(migration, failure):
                    self._ended_early(migration, record, failure)
                    return
            if plan.error is not None and self._hypervisor is not None:
                self._fail(migration, plan.error, record)
                return
            if self._hypervisor is not None:
                self._migrate_for_real(migration, plan, record, abort)
                return
            if not self._sleep_until(start + plan.precopy, abort):
                self._stopped_early(migration, record, abort)
                return
            if plan.error is not None:
                self._fail(migration, plan.error, record)
                return
            self._switch_over(migration, plan, record, abort)
        except Exception:
            LOG.exception("migration %s crashed", migration.uuid)
            record["status"] = "crashed"
        finally:
            with self._lock:
                self._aborts.pop(migration.uuid, None)
            self._truth.finished(record)

    def _checks_done(self, migration: Migration,
                     failure: Failure | None) -> bool:
        """Asynchronous pre-checks (2.34+); before 2.34 the API ran them."""
        if migration.status != "accepted":
            return True
        return self._backend.migrations.checks_done(migration, failure)

    def _ended_early(self, migration: Migration, record: dict,
                     failure: Failure | None) -> None:
        """A pre-check failed, or the server is gone."""
        if failure is not None and migration.status == "error":
            record.update(status="error", completed_at=boottime.now(),
                          fault={"message": failure.message,
                                 "exception": failure.exception,
                                 "precheck": True})
        else:
            record["status"] = "aborted"

    def _stopped_early(self, migration: Migration, record: dict,
                       abort: threading.Event) -> None:
        """Aborted through the API, or the devcloud is stopping."""
        if not abort.is_set():
            record["status"] = "aborted"
            return
        now = boottime.now()
        cancelled = self._backend.migrations.cancel_migration(migration)
        record.update(status="cancelled" if cancelled else "aborted",
                      aborted_at=now, completed_at=boottime.now())

    def _fail(self, migration: Migration, error: FaultSpec,
              record: dict) -> None:
        failed = self._backend.migrations.fail_migration(
            migration, error.message, error.code, error.exception)
        record.update(status="error" if failed else "aborted",
                      fault={"message": error.message, "code": error.code},
                      completed_at=boottime.now())

    def _migrate_for_real(self, migration: Migration, plan: MigrationPlan,
                          record: dict, abort: threading.Event) -> None:
        """The hypervisor migrates; the model follows its switchover."""
        switched: dict = {}

        def switch_over() -> bool:
            switched["outage"] = self._backend.migrations.switch_over(
                migration, plan.outage)
            return migration.status == "post-migrating"

        outcome = self._hypervisor.live_migrate(migration, switch_over, abort)
        record.update(outcome.truth)
        if outcome.status == "cancelled":
            self._stopped_early(migration, record, abort)
            return
        if outcome.status == "failed" and "outage" not in switched:
            self._fail(migration, FaultSpec(outcome.error), record)
            return
        if outcome.status != "completed":
            record["status"] = "aborted"
            return
        self._complete(migration, record, switched.get("outage"))

    def _switch_over(self, migration: Migration, plan: MigrationPlan,
                     record: dict, abort: threading.Event) -> None:
        server_id = migration.server_id
        record["pause_start"] = boottime.now()
        try:
            self._freezer.freeze(server_id)
            if not self._sleep_until(boottime.now() + plan.pause, abort):
                self._stopped_early(migration, record, abort)
                return
            outage = self._backend.migrations.switch_over(migration, plan.outage)
            if migration.status == "post-migrating":
                for effect in self._effects:
                    record.update(effect.switched_over(server_id, plan))
        finally:
            self._freezer.thaw(server_id)
            record["pause_end"] = boottime.now()
        self._complete(migration, record, outage)

    def _complete(self, migration: Migration, record: dict,
                  outage: Outage | None) -> None:
        """After the switchover (simulated or QEMU's): the destination's
        outage into the record, and the migration completed unless it was
        aborted meanwhile."""
        if migration.status != "post-migrating":
            record["status"] = "aborted"
            return
        if outage is not None:
            record.update(outage_start=outage.start, outage_end=outage.end,
                          kind=outage.kind)
        if self._backend.migrations.complete_migration(migration):
            record.update(status="completed", completed_at=boottime.now())
        else:
            record["status"] = "aborted"
