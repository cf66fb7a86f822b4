"""Skip a test, or fail it in CI, when something it needs is missing
(shared by the test directories, like ``conformance_report``)."""

from __future__ import annotations

import os

import pytest


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


def require_vm_guests() -> None:
    """:func:`require` what the devcloud's VM guests need: root, QEMU and the
    other tools its preflight checks, and the built guest image."""
    from rally_metadata_plugin.devcloud.vm import image, preflight

    missing = preflight.problems()
    require(not missing, "; ".join(missing))
    require(image.GuestImage.load(image.default_cache_dir() / image.build_name())
            is not None,
            "the VM guest image is not built (python -m "
            "rally_metadata_plugin.devcloud.vm.image)")
