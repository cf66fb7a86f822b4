"""Live-migration engine: runs each migration as a :mod:`.profiles` draw says
and records the ground truth.

Phases of one migration (all instants on ``CLOCK_BOOTTIME``):

1. ``requested_at``: the API accepted ``os-migrateLive``; status MIGRATING,
   host unchanged (the pre-copy phase, of drawn length).
2. ``pause_start``..``pause_end``: switchover pause. Every guest process is
   SIGSTOPped; while frozen the host switches to the destination and the
   destination's metadata outage (if any) is scheduled to start ``delay``
   after the switch. ``pause_end`` is taken once the guest is thawed.
3. ``completed_at``: status back to ACTIVE on the destination (what rally
   waits for).

Or the migration fails after pre-copy: status ERROR with a fault, host
unchanged, no pause and no outage.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path
from typing import Protocol

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.compute import Server
from rally_metadata_plugin.devcloud.model.migrations import Migration
from rally_metadata_plugin.devcloud.profiles import MigrationPlan, Profile

LOG = logging.getLogger(__name__)


class Freezer(Protocol):
    """Pauses and resumes every process of a guest."""

    def freeze(self, server_id: str) -> None:
        """Stop the guest; returns once every process is stopped."""

    def thaw(self, server_id: str) -> None:
        """Resume the guest."""


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
                 freezer: Freezer, truth: TruthLog) -> None:
        self._backend = backend
        self._profile = profile
        self._seed = seed
        self._freezer = freezer
        self._truth = truth
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    def _rng(self, server: Server, index: int, purpose: str) -> random.Random:
        return random.Random(f"{self._seed}/{server.seq}/{index}/{purpose}")

    def choose_destination(self, server: Server,
                           candidates: list[str]) -> str:
        rng = self._rng(server, server.migrations + 1, "destination")
        return rng.choice(sorted(candidates))

    def start(self, migration: Migration) -> None:
        server = self._backend.compute.find_server(migration.server_id)
        if server is None:
            return
        plan = self._profile.draw(self._rng(server, migration.index, "plan"))
        record = {
            "migration_id": migration.id,
            "server_id": migration.server_id,
            "migration_index": migration.index,
            "source": migration.source,
            "destination": migration.destination,
            "profile": self._profile.name,
            "clock": "CLOCK_BOOTTIME",
            "requested_at": migration.requested_at,
            "pause_start": None, "pause_end": None,
            "outage_start": None, "outage_end": None, "kind": None,
            "completed_at": None, "status": "running", "fault": None,
        }
        self._truth.started(record)
        thread = threading.Thread(
            target=self._run, args=(migration, plan, record),
            name=f"migration-{migration.id[:8]}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Abort running migrations (the devcloud is shutting down)."""
        self._stopped.set()
        for thread in list(self._threads):
            thread.join(timeout)

    def _sleep_until(self, deadline: float) -> bool:
        """Sleep until ``deadline``; False if stopped meanwhile."""
        while not self._stopped.is_set():
            remaining = deadline - boottime.now()
            if remaining <= 0:
                return True
            self._stopped.wait(min(remaining, 0.5))
        return False

    def _run(self, migration: Migration, plan: MigrationPlan,
             record: dict) -> None:
        try:
            if not self._sleep_until(migration.requested_at + plan.precopy):
                record["status"] = "aborted"
                return
            if plan.error is not None:
                failed = self._backend.migrations.fail_migration(
                    migration, plan.error.message, plan.error.code)
                record.update(status="error" if failed else "aborted",
                              fault={"message": plan.error.message,
                                     "code": plan.error.code},
                              completed_at=boottime.now())
                return
            self._switch_over(migration, plan, record)
        except Exception:
            LOG.exception("migration %s crashed", migration.id)
            record["status"] = "crashed"
        finally:
            self._truth.finished(record)

    def _switch_over(self, migration: Migration, plan: MigrationPlan,
                     record: dict) -> None:
        server_id = migration.server_id
        record["pause_start"] = boottime.now()
        try:
            self._freezer.freeze(server_id)
            if not self._sleep_until(boottime.now() + plan.pause):
                record["status"] = "aborted"
                return
            outage = self._backend.migrations.switch_over(migration, plan.outage)
        finally:
            self._freezer.thaw(server_id)
            record["pause_end"] = boottime.now()
        if migration.status == "aborted":
            record["status"] = "aborted"
            return
        if outage is not None:
            record.update(outage_start=outage.start, outage_end=outage.end,
                          kind=outage.kind)
        if self._backend.migrations.complete_migration(migration):
            record.update(status="completed", completed_at=boottime.now())
        else:
            record["status"] = "aborted"
