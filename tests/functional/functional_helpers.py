"""pytest-only helpers of the functional tests: skip, or fail in CI, when a
prerequisite of :mod:`rally_metadata_plugin.testing` is missing."""

from __future__ import annotations

import pytest

from prerequisites import require
from rally_metadata_plugin.testing.guest import runs_applets_first, shell_unavailable
from rally_metadata_plugin.testing.netns import netns_unavailable

__all__ = ["require", "require_netns", "require_shell", "skip_where_applets_come_first"]


def require_shell(shell: str) -> None:
    """busybox for the CirrOS applets, dash when ``shell`` is dash, Debian's
    static busybox when it is ``busybox-static``."""
    missing = shell_unavailable(shell)
    require(missing is None, missing)


def require_netns() -> None:
    """Network namespaces and iptables (for the ``drop`` fault and 169.254.169.254)."""
    missing = netns_unavailable()
    require(missing is None, missing)


def skip_where_applets_come_first(shell: str, case: str, because: str) -> None:
    """Skip a case that cannot exist with a ``sh`` that runs busybox applets
    before PATH (Debian's busybox-static): ``case`` cannot exist ``because``."""
    if runs_applets_first(shell):
        pytest.skip(f"{case} cannot exist with this {shell}: its sh runs its own applets "
                    f"before PATH (FEATURE_SH_STANDALONE), so {because}")
