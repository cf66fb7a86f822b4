"""The fault vocabulary: one enum whose members are today's strings."""

import json

import pytest

from rally_metadata_plugin.core.faults import EXPECTED_REASONS, FaultKind

STRINGS = ("refused", "hang", "drop", "http_500", "http_503", "wrong_instance")


def test_members_are_the_strings_of_profiles_and_truth():
    assert [kind.value for kind in FaultKind] == list(STRINGS)
    for text in STRINGS:
        kind = FaultKind(text)
        assert kind == text and hash(kind) == hash(text)
        assert str(kind) == f"{kind}" == f"{kind:s}" == text
        assert json.dumps({"kind": kind}) == json.dumps({"kind": text})
        assert {text: 1}[kind] == 1
    with pytest.raises(ValueError):
        FaultKind("teapot")


def test_every_member_is_documented():
    for kind in FaultKind:
        assert kind.__doc__ and kind.__doc__ != FaultKind.__doc__, kind


def test_http_status_and_netns():
    assert {k: k.http_status for k in FaultKind if k.http_status} == {
        FaultKind.HTTP_500: 500, FaultKind.HTTP_503: 503}
    assert [k for k in FaultKind if k.needs_netns] == [FaultKind.DROP]


def test_expected_reasons_cover_every_kind_and_tool():
    assert set(EXPECTED_REASONS) == {(k, t) for k in FaultKind for t in ("wget", "curl")}
    assert EXPECTED_REASONS[("refused", "curl")] == {"curl:7"}
    for (kind, _), reasons in EXPECTED_REASONS.items():
        if kind.http_status:
            assert reasons == {f"http:{kind.http_status}"}
