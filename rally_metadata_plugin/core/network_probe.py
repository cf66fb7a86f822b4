"""The network meter's probes: what the Rally controller sends to the guest's address.

Tempest measures a live migration's *network* downtime by pinging the
guest's floating IP from the test host.  The network meter does the same
from the Rally controller, the way the guest meter probes metadata (see
:mod:`.probe_script`), so that both downtimes of one migration can be set
side by side:

* probes start on a fixed schedule (:class:`Schedule`), each in its own
  thread or process, so a probe waiting for its timeout never stretches the
  sampling period;
* every probe is bounded (``timeout``), and its failure reason is recorded:
  ``tcp:refused``, ``tcp:timeout``, ``tcp:unreachable``, ``icmp:timeout``...;
* one record per probe, in the guest meter's record format
  (:func:`.log_analysis.format_record`), on the controller's monotonic
  clock, so :mod:`.log_analysis` finds outages, bounds and ongoing outages
  and attributes them to migration windows exactly as for metadata.

Two probe kinds, chosen by the scenario's ``network_probe`` argument:

``icmp``
    one ICMP echo through the system's ``ping`` (what Tempest does); needs
    ``ping`` on the controller and ICMP allowed by the security group
    (rally-openstack's ``allow_ssh`` context allows it).
``tcp``
    a TCP connect to the guest's SSH port, closed at once: for clouds where
    ICMP is filtered, and for the devcloud, whose floating IPs are loopback
    addresses that the controller's own kernel answers pings for.

Nothing here does I/O or knows about Rally.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import math
import socket
from typing import Optional, Sequence

ICMP = "icmp"
TCP = "tcp"
#: The network meter is off.
OFF = "none"
MODES = (ICMP, TCP, OFF)
PING = "ping"


@dataclasses.dataclass(frozen=True)
class NetworkProbeSettings:
    """What the network meter probes, how often and how long each probe may take."""

    mode: str
    address: str
    port: int = 22
    interval: float = 0.1
    timeout: float = 1.0
    #: Seconds after which the meter stops by itself, should its controller vanish.
    duration: float = 0.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Why these settings cannot measure, as sentences a user can act on."""
        found = []
        if self.mode not in (ICMP, TCP):
            found.append(f"network_probe must be {ICMP!r} or {TCP!r} to measure, "
                         f"got {self.mode!r}")
        for name in ("interval", "timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                found.append(f"network probe {name} must be a positive number of seconds, "
                             f"got {value!r}")
        if not (isinstance(self.port, int) and 0 < self.port < 65536):
            found.append(f"port must be 1-65535, got {self.port!r}")
        try:
            address = ipaddress.ip_address(self.address)
        except ValueError:
            found.append(f"the guest address must be an IP address, got {self.address!r}")
        else:
            if self.mode == ICMP and address.is_loopback:
                found.append(
                    f"network_probe 'icmp' cannot measure {self.address}: a loopback "
                    f"address is answered by the Rally host's own kernel, never by the guest "
                    f"(the devcloud's floating IPs are such addresses), so every ping would "
                    f"pass. Use network_probe 'tcp' (a connect to the guest's SSH port)")
        return found

    @property
    def target(self) -> str:
        """What is probed, for messages: ``ICMP echo to 10.0.0.5``."""
        if self.mode == TCP:
            host = f"[{self.address}]" if ":" in self.address else self.address
            return f"TCP connect to {host}:{self.port}"
        return f"ICMP echo to {self.address}"

    @property
    def max_in_flight(self) -> int:
        """Probes that may overlap: one starts every interval and lives at most the timeout."""
        return int(math.ceil(self.timeout / self.interval)) + 2


def ping_command(settings: NetworkProbeSettings, ping: str = PING) -> list[str]:
    """argv of one bounded ICMP echo.

    ``-W`` (iputils and busybox) takes whole seconds on older builds: it is
    rounded up, and the meter kills a ping still running at ``timeout``, so
    the probe's bound is ``timeout`` whatever ``ping`` accepts.
    """
    family = ["-6"] if ":" in settings.address else []
    wait = str(max(1, int(math.ceil(settings.timeout))))
    return [ping, *family, "-n", "-q", "-c", "1", "-W", wait, settings.address]


def ping_reason(returncode: Optional[int]) -> str:
    """The record's reason for a ping that exited with ``returncode`` (None: killed at
    the timeout)."""
    if returncode == 0:
        return "ok"
    if returncode is None or returncode == 1:  # 1: no reply
        return "icmp:timeout"
    return "icmp:error"


def connect_reason(error: Optional[BaseException]) -> str:
    """The record's reason for a TCP connect that raised ``error`` (None: connected)."""
    if error is None:
        return "ok"
    if isinstance(error, ConnectionRefusedError):
        return "tcp:refused"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "tcp:timeout"
    if isinstance(error, ConnectionResetError):
        return "tcp:reset"
    code = getattr(error, "errno", None)
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN):
        return "tcp:unreachable"
    return f"tcp:errno-{code}" if code else "tcp:error"


@dataclasses.dataclass
class Schedule:
    """Probe start times on a fixed grid: ``first``, ``first + interval``, ...

    A probe never starts early.  When the meter falls behind (a busy host),
    the late probe starts at once and the grid moves with it rather than
    firing the missed probes in a burst: the log's sequence numbers stay
    consecutive and the achieved period shows the delay.
    """

    first: float
    interval: float

    def __post_init__(self) -> None:
        self._next = self.first

    def due(self, now: float) -> Optional[float]:
        """Seconds to wait before the next probe, or ``None`` when it is due now
        (the schedule then moves to the one after)."""
        if now < self._next:
            return self._next - now
        late = now - self._next
        self._next += self.interval if late < self.interval else late + self.interval
        return None


_BASELINE_HINTS = {
    "icmp:timeout": "the security group may not allow ICMP from the Rally host (add a rule "
                    "for ICMP, as rally-openstack's allow_ssh context does) or the floating IP "
                    "is not routed to the guest; or use network_probe 'tcp'",
    "icmp:error": "the Rally host has no route to the guest's address",
    "tcp:refused": "nothing listens on the guest's SSH port, or a firewall rejects it",
    "tcp:timeout": "the security group may not allow the SSH port from the Rally host, or the "
                   "floating IP is not routed to the guest",
    "tcp:unreachable": "the Rally host has no route to the guest's address",
}


def explain_no_baseline(settings: NetworkProbeSettings, records: Sequence, needed: int,
                        waited: float, fatal: Optional[str] = None) -> str:
    """Why the guest's address never answered ``needed`` probes in a row before the
    first migration, as sentences a user can act on."""
    if fatal:
        return f"The network meter ({settings.target}) gave up: {fatal}."
    head = (f"The guest's address never answered the network meter ({settings.target}) "
            f"{needed} times in a row within {waited:.0f} s before the first live migration")
    if not records:
        return head + ": no probe finished; the Rally host may be overloaded."
    good = sum(1 for r in records if r.ok)
    counts: dict[str, int] = {}
    for record in records:
        if not record.ok:
            counts[record.reason] = counts.get(record.reason, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    hints = "; ".join(dict.fromkeys(_BASELINE_HINTS[r] for r, _ in ranked
                                    if r in _BASELINE_HINTS))
    text = (f"{head} ({good} of {len(records)} probes passed; failures: "
            + ", ".join(f"{reason} ({n}x)" for reason, n in ranked) + ").")
    return text + (f" Likely cause: {hints}." if hints else "")
