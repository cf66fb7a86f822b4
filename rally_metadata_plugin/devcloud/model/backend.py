"""The whole simulated cloud: the services' backends composed.

:class:`CloudBackend` holds one backend per part of the model and owns what
they share: the configuration, the random generator (MAC addresses, decoy
ids), the timer thread, one re-entrant lock, and change notification to the
adapters that follow the model (guests, SSH, metadata service), which
implement :class:`CloudListener`. Handlers and adapters call the parts
directly: ``backend.compute.create_server(...)``,
``backend.migrations.instance_identity(...)``. Nova's services and hosts are in
``backend.services``, its instance actions in ``backend.actions``.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Callable, Iterator, Protocol

from rally_metadata_plugin.devcloud.config import DevCloudConfig
from rally_metadata_plugin.devcloud.model.actions import ActionBackend
from rally_metadata_plugin.devcloud.model.common import isotime, utcnow
from rally_metadata_plugin.devcloud.model.compute import (ComputeBackend,
                                                          Image, Keypair,
                                                          Server)
from rally_metadata_plugin.devcloud.model.identity import IdentityBackend
from rally_metadata_plugin.devcloud.model.l3 import (FloatingIP, L3Backend,
                                                     Router)
from rally_metadata_plugin.devcloud.model.migrations import (
    LiveMigrationBackend, Outage)
from rally_metadata_plugin.devcloud.model.network import (Network,
                                                          NetworkBackend,
                                                          Port)
from rally_metadata_plugin.devcloud.model.security_groups import (
    DEFAULT_GROUP, SecurityGroup, SecurityGroupBackend)
from rally_metadata_plugin.devcloud.model.server_ports import ServerPorts
from rally_metadata_plugin.devcloud.model.services import ServiceBackend


class CloudListener(Protocol):
    """An adapter that follows the model (guests, metadata service)."""

    def server_changed(self, server: Server) -> None:
        """Status, host or addresses of the server may have changed."""

    def server_deleted(self, server: Server) -> None:
        """The server is gone; release everything it had."""

    def outage_added(self, outage: Outage) -> None:
        """A metadata outage was scheduled for a server."""


class Timers(Protocol):
    """Delayed callbacks (the devcloud's :class:`..timers.TimerThread`)."""

    def call_later(self, delay: float, func: Callable[[], None]) -> None:
        """Run ``func`` after ``delay`` seconds."""


class CloudBackend:
    """The simulated cloud. Thread-safe: every part takes :attr:`lock`.

    A change that adapters must hear of happens inside :meth:`changes`; the
    notifications it queues run after the lock is released, in the order
    the changes happened, so an adapter may call back into the model.
    """

    def __init__(self, config: DevCloudConfig, timers: Timers,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.timers = timers
        self.rng = rng or random.Random(config.seed)
        self.lock = threading.RLock()
        self._pending = threading.local()
        self.listeners: list[CloudListener] = []

        self.identity = IdentityBackend(self)
        self.services = ServiceBackend(self)
        self.compute = ComputeBackend(self)
        self.network = NetworkBackend(self)
        self.server_ports = ServerPorts(self)
        self.l3 = L3Backend(self)
        self.security = SecurityGroupBackend(self)
        self.migrations = LiveMigrationBackend(self)
        self.actions = ActionBackend(self)

        now = isotime(utcnow())
        self.identity.seed(config.users)
        admin_project = self.identity.admin_project.id
        self.services.seed(config.host_names, config.disabled_hosts,
                           config.down_hosts, now)
        self.compute.seed(admin_project, now)
        self.network.seed_public(admin_project, config.floating_cidr, now)

    # -- change notification --------------------------------------------------

    @contextlib.contextmanager
    def changes(self) -> Iterator[None]:
        """Hold the lock; run the notifications queued meanwhile once the
        outermost ``changes()`` releases it."""
        outermost = not getattr(self._pending, "active", False)
        if outermost:
            self._pending.active = True
            self._pending.events = []
        try:
            with self.lock:
                yield
        finally:
            if outermost:
                events, self._pending.events = self._pending.events, []
                self._pending.active = False
                for event in events:
                    event()

    def _queue(self, notify: Callable[[CloudListener], None]) -> None:
        if not getattr(self._pending, "active", False):
            raise RuntimeError("a change is notified outside changes()")
        for listener in self.listeners:
            self._pending.events.append(lambda l=listener: notify(l))

    def server_changed(self, server: Server) -> None:
        """Queue :meth:`CloudListener.server_changed` for every listener."""
        self._queue(lambda listener: listener.server_changed(server))

    def server_deleted(self, server: Server) -> None:
        self._queue(lambda listener: listener.server_deleted(server))

    def outage_added(self, outage: Outage) -> None:
        self._queue(lambda listener: listener.outage_added(outage))

    # -- what is left ---------------------------------------------------------

    def leftovers(self) -> dict[str, list[str]]:
        """Resources created through the APIs that still exist, by kind.

        The seeded ones (hosts, flavors, the image, the public network) are
        left out, as are the ``default`` security groups rally's cleanup skips
        on purpose; anything else still here when a task has finished leaked.
        """
        with self.lock:
            return {
                "servers": sorted(self.servers),
                "ports": sorted(self.ports),
                "floatingips": sorted(self.floatingips),
                "routers": sorted(self.routers),
                "networks": sorted(n.id for n in self.networks.values()
                                   if not n.external),
                "security_groups": sorted(
                    g.id for g in self.security_groups.values()
                    if g.name != DEFAULT_GROUP),
                "keypairs": sorted(f"{owner}/{name}"
                                   for owner, name in self.keypairs),
            }

    # -- the tables, for tests and inspection (the APIs use methods) ----------

    @property
    def images(self) -> dict[str, Image]:
        return self.compute.images

    @property
    def keypairs(self) -> dict[tuple[str, str], Keypair]:
        return self.compute.keypairs

    @property
    def servers(self) -> dict[str, Server]:
        return self.compute.servers

    @property
    def networks(self) -> dict[str, Network]:
        return self.network.networks

    @property
    def ports(self) -> dict[str, Port]:
        return self.network.ports

    @property
    def routers(self) -> dict[str, Router]:
        return self.l3.routers

    @property
    def floatingips(self) -> dict[str, FloatingIP]:
        return self.l3.floatingips

    @property
    def security_groups(self) -> dict[str, SecurityGroup]:
        return self.security.security_groups
