"""Settings shared by every test directory."""

import os

import pytest
from hypothesis import settings

# CI must be reproducible: the same examples on every run, more of them, and
# no per-example deadline on a loaded 2-core machine.  Locally, hypothesis
# explores new random examples each run (and replays failures it found).
settings.register_profile("ci", derandomize=True, max_examples=300, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def nova_conformance_log(tmp_path_factory):
    """Turns the devclouds' Nova conformance checker on for the session
    (devclouds started in-process or as subprocesses read the variable);
    the log is $RMP_DEVCLOUD_CONFORMANCE when already set."""
    from rally_metadata_plugin.devcloud.api import conformance

    path = conformance.log_path(None) or (tmp_path_factory.getbasetemp()
                                          / "nova-conformance.jsonl")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(conformance.ENV_VAR, str(path))
        yield path


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "conformance_report: runs after every other test of the "
                   "session, to judge the whole session's conformance log")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker(
        "conformance_report") is not None)
