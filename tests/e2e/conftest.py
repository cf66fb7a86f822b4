"""The e2e devclouds (subprocesses of tools/devcloud_task.py) check their
Nova responses against tempest's schemas: they inherit
$RMP_DEVCLOUD_CONFORMANCE from this session."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _check_nova_conformance(nova_conformance_log):
    return nova_conformance_log
