"""Options this package adds to ``rally.conf`` (group ``metadata_meter``)."""

from __future__ import annotations

from oslo_config import cfg

OPTS = [
    cfg.FloatOpt("ssh_command_timeout", default=60.0, min=1.0,
                 help="Seconds one command run in the guest over SSH may take."),
    cfg.FloatOpt("meter_start_timeout", default=15.0, min=1.0,
                 help="Seconds to wait for the guest meter's first probe record after "
                      "starting it."),
    cfg.FloatOpt("baseline_timeout", default=60.0, min=1.0,
                 help="Seconds to wait for a healthy baseline (baseline_probes good probes "
                      "in a row) before the first live migration; the iteration fails "
                      "without it."),
    cfg.FloatOpt("log_poll_interval", default=1.0, min=0.1,
                 help="Shortest time between reads of the guest meter log while waiting "
                      "for the baseline or for recovery after a migration; a read waits "
                      "longer when the log shows the good probes awaited cannot all be in "
                      "by then."),
    cfg.IntOpt("min_hypervisors", default=2, min=2,
               help="Compute hosts nova must list before the scenario boots a server."),
]


GROUP = "metadata_meter"


def list_opts() -> list:
    return [(GROUP, OPTS)]


def register(conf) -> None:
    """Register the options on ``conf`` (idempotent; Rally also does it when loading plugins)."""
    conf.register_opts(OPTS, group=cfg.OptGroup(name=GROUP, title=f"{GROUP} options"))
