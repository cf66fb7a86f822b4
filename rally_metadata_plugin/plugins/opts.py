"""Options this package adds to ``rally.conf`` (group ``metadata_meter``)."""

from __future__ import annotations

from oslo_config import cfg

OPTS = [
    cfg.FloatOpt("ssh_command_timeout", default=60.0, min=1.0,
                 help="Seconds one command run in the guest over SSH may take."),
]


def list_opts() -> list:
    return [("metadata_meter", OPTS)]
