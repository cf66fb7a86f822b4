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
