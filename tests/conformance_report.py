"""The verdict on a whole session's Nova conformance log, imported by the
test directories whose devclouds write one (tests/devcloud, tests/e2e)."""

import pytest

from rally_metadata_plugin.devcloud.api import conformance


@pytest.mark.conformance_report
def test_every_nova_response_of_the_session_conforms(nova_conformance_log):
    summary = conformance.summarize(conformance.load(nova_conformance_log))
    if not summary.total:
        pytest.skip("no devcloud served a Nova call in this session")
    print(f"conformance log: {nova_conformance_log}")
    print(conformance.format_summary(summary))
    assert not summary.violations, conformance.format_summary(summary)
