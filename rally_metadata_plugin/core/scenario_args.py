"""The scenario's meter arguments: the one place that knows how they combine.

``MetadataDowntime.boot_and_live_migrate`` declares its arguments, with their
defaults, types and single-value bounds, in its typed ``run()`` signature;
Rally turns that into the schema ``rally task validate`` checks.  What a schema
cannot say (one argument against another, and how the arguments become the
guest meter's settings) lives here, and both the validator (before the task
starts) and ``run()`` (for every iteration) go through :class:`MeterArguments`.

Adding an argument that shapes the meter means: a parameter of ``run()`` (with
its default and docstring line), a field here, and its rule in
:meth:`MeterArguments.problems` if it depends on another one.

Nothing here does I/O or imports Rally.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

from rally_metadata_plugin.core import probe_script

#: Per-probe connection timeout: short, so a refused or dropped connect fails
#: fast, but never longer than the whole probe.
CONNECT_TIMEOUT = 0.5


def _number(value: Any) -> bool:
    """A usable number of seconds; anything else is the schema's to report."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


#: Characters a workdir may hold besides letters and digits.  The commands
#: quote every path, but a directory the guest's tools, the meter's own
#: messages and a user reading them all take verbatim is a plain one.
_WORKDIR_PUNCTUATION = frozenset("/._-+@,:=")


def _workdir_problems(workdir: Any) -> list[str]:
    """What is wrong with a ``workdir`` argument (None: the default, fine)."""
    if not isinstance(workdir, str):
        return []  # None, or the schema's to report
    found = []
    if not workdir.startswith("/"):
        found.append(f"workdir must be an absolute path (starting with /), got {workdir!r}")
    odd = sorted({c for c in workdir
                  if c != "\n" and not (c.isascii() and c.isalnum())
                  and c not in _WORKDIR_PUNCTUATION})
    if odd:
        found.append("workdir must not contain spaces or shell metacharacters: "
                     + ", ".join(repr(c) for c in odd))
    return found


@dataclasses.dataclass(frozen=True)
class MeterArguments:
    """The arguments of the scenario that decide what the guest meter does.

    No defaults here: they are ``run()``'s, and callers pass complete values.
    """

    metadata_url: Optional[str]
    ip_version: int
    guest_interface: str
    expect: Optional[str]
    probe_interval: float
    fast_probe_interval: float
    probe_timeout: float
    http_tool: str
    workdir: Optional[str]
    recovery_probes: int
    recovery_timeout: float
    target_hosts: Optional[Sequence[str]]
    nics: Optional[Sequence[Mapping[str, str]]]

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> "MeterArguments":
        """Pick this class's fields out of a scenario's complete argument mapping."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in args.items() if k in names})

    def problems(self) -> list[str]:
        """Every cross-argument problem, as sentences naming the arguments.

        Single-argument problems (type, range, pattern) are the schema's; a
        rule here is only checked when the values it relates are usable.
        """
        found = []
        interval, fast = self.probe_interval, self.fast_probe_interval
        if _number(interval) and _number(fast) and fast > interval:
            found.append(
                f"fast_probe_interval ({fast}) must not exceed probe_interval ({interval}): "
                f"fast mode probes more often during migrations")
        probes, timeout = self.recovery_probes, self.recovery_timeout
        if _number(probes) and _number(timeout) and _number(interval) \
                and timeout <= probes * interval:
            found.append(
                f"recovery_timeout ({timeout} s) must be longer than recovery_probes x "
                f"probe_interval ({probes} x {interval} s), or recovery can never be seen")
        if self.target_hosts is not None and len(self.target_hosts) == 0:
            found.append("target_hosts must list at least one host, or be omitted to let "
                         "the scheduler choose")
        for nic in self.nics or ():
            if isinstance(nic, Mapping) and not (nic.get("net-id") or nic.get("net-name")):
                found.append(f"each entry of nics needs 'net-id' or 'net-name', got {nic}")
        for name in ("expect", "metadata_url", "workdir"):
            value = getattr(self, name)
            if isinstance(value, str) and "\n" in value:
                found.append(f"{name} must be a single line")
        found.extend(_workdir_problems(self.workdir))
        return found

    @property
    def url(self) -> str:
        """The URL the guest probes."""
        if self.metadata_url:
            return self.metadata_url
        if self.ip_version == 6:
            return probe_script.ipv6_metadata_url(self.guest_interface)
        return probe_script.OPENSTACK_METADATA_URL

    def probe_settings(self, *, server_id: str, duration: float) -> probe_script.ProbeSettings:
        """The guest meter's settings for the server ``server_id``.

        ``duration`` bounds the meter's life should the controller vanish.
        Raises ``ValueError`` naming every problem (``rally task validate``
        reports the same ones before the task starts).
        """
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return probe_script.ProbeSettings(
            url=self.url,
            expect=self.expect or server_id,
            interval=self.probe_interval,
            fast_interval=self.fast_probe_interval,
            connect_timeout=min(CONNECT_TIMEOUT, self.probe_timeout),
            timeout=self.probe_timeout,
            tool=self.http_tool,
            # One directory per server: simulated guests may share a file system.
            workdir=self.workdir or f"/tmp/rally-metadata-meter-{server_id[:8]}",
            duration=duration,
        )
