"""Network loss at the switchover: the guest is off the network for a while.

A :class:`~.migration_engine.SwitchoverEffect`: when a migration's plan has
``network_loss`` (the profile's ``network_loss_seconds``), the guest's
floating IPs stop answering new connections from the switchover for that
long, and the ground truth records when (``network_loss_start``/``_end``,
``CLOCK_BOOTTIME``).  The controller's network meter sees it with its TCP
probe (connection refused).  Process guests have loopback floating IPs,
which the host's own kernel answers pings for, so no ICMP probe can see it
here; a guest with a network of its own (a VM) makes the loss real instead.
"""

from __future__ import annotations

import logging

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.profiles import MigrationPlan
from rally_metadata_plugin.devcloud.ssh import SshGateway

LOG = logging.getLogger(__name__)


class NetworkLoss:
    """Takes a guest's floating IPs off the network as the plan says."""

    def __init__(self, gateway: SshGateway) -> None:
        self._gateway = gateway

    def switched_over(self, server_id: str, plan: MigrationPlan) -> dict:
        if not plan.network_loss:
            return {}
        start = boottime.now()
        addresses = self._gateway.refuse_connections(server_id, plan.network_loss)
        LOG.info("guest %s: %d floating IP(s) off the network for %.3f s",
                 server_id, addresses, plan.network_loss)
        return {"network_loss_start": start,
                "network_loss_end": start + plan.network_loss,
                "network_loss_addresses": addresses}
