"""pytest-only helpers of the functional tests: skip, or fail in CI, when a
prerequisite of :mod:`rally_metadata_plugin.testing` is missing."""

from __future__ import annotations

import os

import pytest

from rally_metadata_plugin.testing.guest import shell_unavailable
from rally_metadata_plugin.testing.netns import netns_unavailable


def require(condition: bool, why: str) -> None:
    """Skip the calling test saying ``why``, or fail when ``RMP_REQUIRE_ALL=1``.

    CI sets ``RMP_REQUIRE_ALL=1``: there a missing prerequisite is a broken
    CI image, not a reason to silently test less.
    """
    if condition:
        return
    if os.environ.get("RMP_REQUIRE_ALL") == "1":
        pytest.fail(f"RMP_REQUIRE_ALL=1 but cannot run: {why}", pytrace=False)
    pytest.skip(why)


def require_shell(shell: str) -> None:
    """busybox for the CirrOS applets, and dash when ``shell`` is dash."""
    missing = shell_unavailable(shell)
    require(missing is None, missing)


def require_netns() -> None:
    """Network namespaces and iptables (for the ``drop`` fault and 169.254.169.254)."""
    missing = netns_unavailable()
    require(missing is None, missing)
