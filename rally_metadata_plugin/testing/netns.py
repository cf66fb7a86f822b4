"""A throw-away Linux network namespace, for the ``drop`` fault and 169.254.169.254.

:class:`NetNS` creates a namespace with ``lo`` up and the metadata address
on it; the fake metadata server binds ``169.254.169.254:80`` inside it and
the fake guest runs its shell there, so the meter's default URL works and
iptables rules (``drop``) affect nothing outside.  Needs root, iproute2's
``ip`` and ``iptables``: :func:`netns_unavailable` says what is missing.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from typing import Optional, Sequence

from rally_metadata_plugin.core.probe_script import METADATA_HOST
from rally_metadata_plugin.devcloud.setns import in_namespace

IP = shutil.which("ip")
IPTABLES = shutil.which("iptables")



def is_root() -> bool:
    return os.geteuid() == 0


def netns_unavailable() -> Optional[str]:
    """Why network namespaces and iptables cannot be used here (None: they can)."""
    if not is_root():
        return (f"not root (euid {os.geteuid()}): network namespaces and iptables "
                "need root")
    if IP is None:
        return "iproute2 'ip' is not installed"
    if IPTABLES is None:
        return "iptables is not installed"
    return None


class NetNS:
    """A throw-away network namespace with lo up and 169.254.169.254 on lo."""

    def __init__(self, prefix: str = "rmp") -> None:
        self.name = f"{prefix}-{os.getpid()}-{random.randrange(16**6):06x}"
        self._created = False

    def __enter__(self) -> "NetNS":
        self.create()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self) -> None:
        subprocess.run([IP, "netns", "add", self.name], check=True, capture_output=True)
        self._created = True
        try:
            self.run([IP, "link", "set", "lo", "up"])
            self.run([IP, "addr", "add", f"{METADATA_HOST}/32", "dev", "lo"])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Delete the namespace (its iptables rules go with it)."""
        if self._created:
            subprocess.run([IP, "netns", "delete", self.name], capture_output=True)
            self._created = False

    @property
    def prefix(self) -> list[str]:
        """Prepend to an argv to run it inside the namespace."""
        return [IP, "netns", "exec", self.name]

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("check", True)
        kwargs.setdefault("capture_output", True)
        return subprocess.run([*self.prefix, *argv], **kwargs)

    def iptables(self, *args: str) -> None:
        self.run([IPTABLES, "-w", *args])

    def call_inside(self, function):
        """Run ``function()`` in a thread that joined the namespace; sockets stay there."""
        return in_namespace(self.name, function)
