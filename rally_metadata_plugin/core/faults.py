"""The fault vocabulary: the ways a metadata service can fail a guest's request.

One enum, :class:`FaultKind`, names every fault the project injects: the
devcloud's migration profiles (``kinds:`` in ``devcloud/profiles/*.yaml``),
the fake metadata server of :mod:`rally_metadata_plugin.testing` used by the
functional tests and ``tools/bench_meter.py``.  Its members are ``str``
values, so they compare equal to, hash like, print and serialise (JSON, the
devcloud's ``truth.jsonl``) as the plain strings the YAML files carry.

:data:`EXPECTED_REASONS` is what each kind looks like from inside the guest:
the ``reason`` field the probe script (:mod:`.probe_script`) writes for a
failed probe, per HTTP client.

Not every environment can inject every kind: ``drop`` needs packet filtering
between the guest and the service (iptables in a network namespace of their
own, i.e. root), which the devcloud's process guests, sharing the host's
network stack, do not have (see :attr:`FaultKind.needs_netns`).
"""

from __future__ import annotations

import enum
from typing import Mapping, Optional


class FaultKind(str, enum.Enum):
    """What the metadata service does to a request that arrives during a fault.

    Each member's ``__doc__`` says what the service does and what the guest's
    probe sees (``reason`` field in brackets, curl / busybox wget).
    """

    def __new__(cls, value: str, doc: str) -> "FaultKind":
        member = str.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    REFUSED = ("refused", """The service's listening socket is closed: connects fail at
        once with ECONNREFUSED (``curl:7`` / ``wget:refused``).  The socket is
        reopened on the same port when the fault ends.""")

    HANG = ("hang", """Connections are accepted but requests are never answered;
        the client's own timeout ends the probe (``curl:28`` /
        ``wget:timeout``).""")

    DROP = ("drop", """Packets to the service are silently dropped (iptables
        ``DROP``): the connect never completes and the client times out
        (``curl:28`` / ``wget:timeout``).  Needs a network namespace of its
        own (see :attr:`needs_netns`): the devcloud cannot inject it.""")

    HTTP_500 = ("http_500", """Answered with HTTP 500 Internal Server Error
        (``http:500``).""")

    HTTP_503 = ("http_503", """Answered with HTTP 503 Service Unavailable
        (``http:503``).""")

    WRONG_INSTANCE = ("wrong_instance", """Answered with HTTP 200 carrying *another*
        instance's metadata: the expected text is missing from the body
        (``content``).""")

    def __str__(self) -> str:
        # the plain value in str(), format() and f-strings, on every Python
        return self.value

    @property
    def http_status(self) -> Optional[int]:
        """The HTTP status the service answers with (None: no error status)."""
        return {FaultKind.HTTP_500: 500, FaultKind.HTTP_503: 503}.get(self)

    @property
    def needs_netns(self) -> bool:
        """Injecting it needs iptables in a network namespace (root).

        True only for ``drop``; the devcloud's process guests cannot inject it.
        """
        return self is FaultKind.DROP


#: Reasons the guest meter may log for a probe failed by each kind, per HTTP
#: tool (``wget`` is busybox wget, ``curl`` the real one).
EXPECTED_REASONS: Mapping[tuple[FaultKind, str], frozenset[str]] = {
    (FaultKind.REFUSED, "wget"): frozenset({"wget:refused"}),
    (FaultKind.REFUSED, "curl"): frozenset({"curl:7"}),
    (FaultKind.HANG, "wget"): frozenset({"wget:timeout"}),
    (FaultKind.HANG, "curl"): frozenset({"curl:28"}),
    (FaultKind.DROP, "wget"): frozenset({"wget:timeout"}),
    (FaultKind.DROP, "curl"): frozenset({"curl:28"}),
    (FaultKind.HTTP_500, "wget"): frozenset({"http:500"}),
    (FaultKind.HTTP_500, "curl"): frozenset({"http:500"}),
    (FaultKind.HTTP_503, "wget"): frozenset({"http:503"}),
    (FaultKind.HTTP_503, "curl"): frozenset({"http:503"}),
    (FaultKind.WRONG_INSTANCE, "wget"): frozenset({"content"}),
    (FaultKind.WRONG_INSTANCE, "curl"): frozenset({"content"}),
}
