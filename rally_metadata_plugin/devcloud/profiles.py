"""Live-migration fault profiles: the migration fault model as data.

A profile is a YAML file (see ``profiles/*.yaml``) drawn from once per
migration with a seeded :class:`random.Random`. Every field is documented in
the shipped files; the format in short::

    name: healthy
    description: free text
    precopy_seconds: [0.3, 1.0]   # uniform [min, max] (or one number)
    pause_seconds: [0.02, 0.3]
    precheck_seconds: 0.05        # fixed: nova-conductor's pre-checks
    prepare_seconds: 0.05         # fixed: pre_live_migration (preparing)
    outcomes:                     # one is picked per migration, by weight
      - weight: 9
        outage_delay_seconds: 0
        outage_seconds: [0.2, 1.5]    # null: the outage never ends
        kinds: {refused: 1, http_500: 1}   # FaultKind values, but not drop
      - weight: 1
        error: {message: "...", code: 500}
      - weight: 1
        precheck_error: {message: "No valid host was found. ...",
                         exception: NoValidHost}
      - weight: 1                 # what happens to the guest at the switchover
        guest_reboot: true            # every guest process is killed
        ssh_blackhole_seconds: [5, 10]    # null: for good
        network_loss_seconds: [1, 3]      # the floating IP stops answering

An outcome may also say what the switchover does to the guest beyond the
pause (both are recorded in ``truth.jsonl``):

* ``guest_reboot: true``: the guest reboots on the destination (another CPU
  model; or, to the meter alike, the OOM killer, a full /tmp): every guest
  process is killed, the meter with them, and the guest's SSH connections
  close; new ones are served at once (``guest_reboot_at``).
* ``ssh_blackhole_seconds``: the floating IP moved and packets of the
  guest's EXISTING SSH connections are dropped: the devcloud stops reading
  and writing them (no FIN, no RST) for the drawn time, or for good when
  null; new connections are served (``ssh_blackhole_start``/``_end``,
  ``ssh_blackhole_connections``).
* ``network_loss_seconds``: the guest is off the network for the drawn time
  from the switchover: its floating IP stops answering new connections
  (connection refused; existing ones are left to ``ssh_blackhole``), which
  a TCP-connect network probe sees (``network_loss_start``/``_end``). A
  process guest's floating IP is a loopback address the host's own kernel
  answers pings for: only a VM guest can show the loss to ICMP.

A profile may also say how QEMU migrates the VM guests (``vm:``, see
:mod:`.vm.knobs`); the process guests ignore it.

No code path depends on a profile's name: adding a profile is adding a file.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any, Mapping

import yaml

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud.vm.knobs import KnobError, VmKnobs

PROFILE_DIR = Path(__file__).parent / "profiles"

#: The faults the devcloud can inject (see :class:`FaultKind`): all but those
#: needing a network namespace (``drop``), which its process guests lack.
OUTAGE_KINDS = tuple(kind for kind in FaultKind if not kind.needs_netns)
#: A profile for VM guests (one with a ``vm:`` section) may use every kind:
#: each of their compute hosts is a network namespace (``drop`` is an
#: iptables rule there); process guests refuse such a profile at start.
VM_OUTAGE_KINDS = tuple(FaultKind)


class ProfileError(ValueError):
    """A profile file is malformed."""


@dataclasses.dataclass(frozen=True)
class Range:
    """A uniform distribution on ``[low, high]`` seconds."""

    low: float
    high: float

    @classmethod
    def parse(cls, value: Any, field: str) -> "Range":
        if isinstance(value, (int, float)):
            return cls(float(value), float(value))
        if (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, (int, float)) for v in value)
                and 0 <= value[0] <= value[1]):
            return cls(float(value[0]), float(value[1]))
        raise ProfileError(f"{field}: expected a number or [min, max] with "
                           f"0 <= min <= max, got {value!r}")

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    """Makes a migration fail: the server goes to ERROR with this fault
    (``error``), or a pre-check fails and the server stays ACTIVE on its
    source (``precheck_error``). ``exception`` is the nova exception the
    instance action's traceback names."""

    message: str
    code: int = 500
    exception: str = "MigrationError"


#: ``ssh_blackhole_seconds: null``: existing SSH connections stay dead.
FOREVER = Range(math.inf, math.inf)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One weighted way a migration can end."""

    weight: float
    kinds: Mapping[FaultKind, float]
    outage: Range | None          # None: the outage never ends
    outage_delay: Range
    error: FaultSpec | None = None
    precheck_error: FaultSpec | None = None
    guest_reboot: bool = False
    ssh_blackhole: Range | None = None    # None: none; FOREVER: for good
    network_loss: Range | None = None     # None: the network stays up

    def draw_network_loss(self, rng: random.Random) -> float | None:
        """Seconds the guest is off the network from the switchover (None: not at all)."""
        return None if self.network_loss is None else self.network_loss.draw(rng)

    def draw_blackhole(self, rng: random.Random) -> float | None:
        """Seconds the SSH blackhole lasts (``math.inf``: for good)."""
        if self.ssh_blackhole is None:
            return None
        if self.ssh_blackhole is FOREVER:
            return math.inf
        return self.ssh_blackhole.draw(rng)


@dataclasses.dataclass(frozen=True)
class OutagePlan:
    """The metadata outage of one migration, relative to the switchover."""

    kind: FaultKind
    delay: float
    duration: float | None        # None: until the server is deleted


@dataclasses.dataclass(frozen=True)
class MigrationPlan:
    """Everything random about one migration, drawn up front."""

    precopy: float
    pause: float
    outage: OutagePlan | None
    error: FaultSpec | None
    precheck_error: FaultSpec | None = None
    guest_reboot: bool = False
    #: seconds existing SSH connections go unanswered (``math.inf``: for good)
    ssh_blackhole: float | None = None
    #: seconds the floating IP stops answering from the switchover
    network_loss: float | None = None


@dataclasses.dataclass(frozen=True)
class Profile:
    """A named fault model for live migrations."""

    name: str
    description: str
    precopy: Range
    pause: Range
    outcomes: tuple[Outcome, ...]
    #: fixed durations (not drawn, so that seeds keep their plans): the
    #: asynchronous pre-checks, then pre_live_migration, both inside precopy
    precheck_seconds: float = 0.05
    prepare_seconds: float = 0.05
    #: how QEMU migrates VM guests (the ``vm:`` section)
    vm: VmKnobs = VmKnobs()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Profile":
        if not isinstance(data, Mapping):
            raise ProfileError("a profile is a mapping")
        outcomes = tuple(_parse_outcome(o, i, for_vms="vm" in data)
                         for i, o in enumerate(data.get("outcomes") or []))
        if not outcomes:
            raise ProfileError("outcomes: at least one is required")
        if sum(o.weight for o in outcomes) <= 0:
            raise ProfileError("outcomes: weights must not all be zero")
        return cls(
            name=str(data.get("name", "custom")),
            description=str(data.get("description", "")).strip(),
            precopy=Range.parse(data.get("precopy_seconds", 0.5),
                                "precopy_seconds"),
            pause=Range.parse(data.get("pause_seconds", 0.05),
                              "pause_seconds"),
            outcomes=outcomes,
            precheck_seconds=_seconds(data, "precheck_seconds", 0.05),
            prepare_seconds=_seconds(data, "prepare_seconds", 0.05),
            vm=_vm_knobs(data.get("vm")))

    @classmethod
    def load(cls, name_or_path: str | Path) -> "Profile":
        """Load a shipped profile by name, or any profile file by path."""
        path = Path(name_or_path)
        if not path.suffix:
            path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ProfileError(
                f"no profile {name_or_path!r}; shipped: {available()}")
        with path.open() as f:
            return cls.from_dict(yaml.safe_load(f))

    def netns_kinds(self) -> list[FaultKind]:
        """The kinds of this profile that only VM guests can inject."""
        return sorted({kind for outcome in self.outcomes
                       for kind in outcome.kinds if kind.needs_netns})

    def draw(self, rng: random.Random) -> MigrationPlan:
        """Draw one migration's plan; the order of draws is fixed so that a
        seed reproduces the same plan."""
        precopy = self.precopy.draw(rng)
        pause = self.pause.draw(rng)
        outcome = rng.choices(self.outcomes,
                              weights=[o.weight for o in self.outcomes])[0]
        if outcome.error is not None:
            return MigrationPlan(precopy, pause, None, outcome.error)
        if outcome.precheck_error is not None:
            return MigrationPlan(precopy, pause, None, None,
                                 outcome.precheck_error)
        outage = None
        if outcome.kinds:
            kinds = sorted(outcome.kinds)
            kind = rng.choices(kinds,
                               weights=[outcome.kinds[k] for k in kinds])[0]
            delay = outcome.outage_delay.draw(rng)
            duration = outcome.outage.draw(rng) if outcome.outage else None
            outage = OutagePlan(kind, delay, duration)
        # drawn last: profiles without these fields draw as they always did
        blackhole = outcome.draw_blackhole(rng)
        return MigrationPlan(precopy, pause, outage, None,
                             guest_reboot=outcome.guest_reboot,
                             ssh_blackhole=blackhole,
                             network_loss=outcome.draw_network_loss(rng))


def available() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _parse_outcome(data: Any, index: int, for_vms: bool = False) -> Outcome:
    where = f"outcomes[{index}]"
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping")
    weight = data.get("weight", 1)
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ProfileError(f"{where}.weight: a number >= 0")
    for field in ("error", "precheck_error"):
        if data.get(field) is not None:
            spec = _fault_spec(data[field], f"{where}.{field}")
            for key in ("guest_reboot", "ssh_blackhole_seconds",
                        "network_loss_seconds"):
                if key in data:
                    raise ProfileError(f"{where}.{key}: a migration that "
                                       f"fails has no switchover to do that at")
            return Outcome(float(weight), {}, None, Range(0, 0),
                           **{field: spec})
    kinds = data.get("kinds") or {}
    if not isinstance(kinds, Mapping):
        raise ProfileError(f"{where}.kinds: a mapping kind -> weight")
    allowed = VM_OUTAGE_KINDS if for_vms else OUTAGE_KINDS
    for kind, kind_weight in kinds.items():
        if kind not in allowed:
            known = ", ".join(allowed)
            if kind in tuple(FaultKind):
                raise ProfileError(
                    f"{where}.kinds: the devcloud cannot inject {kind!r} (it "
                    f"needs iptables in a network namespace; the devcloud's "
                    f"process guests are host processes), expected one of "
                    f"{known}; its VM guests can: give the profile a vm: "
                    f"section and run them (--guests vm)")
            raise ProfileError(f"{where}.kinds: unknown kind {kind!r}, "
                               f"expected one of {known}")
        if not isinstance(kind_weight, (int, float)) or kind_weight < 0:
            raise ProfileError(f"{where}.kinds.{kind}: a number >= 0")
    if "outage_seconds" not in data and kinds:
        raise ProfileError(f"{where}.outage_seconds is required "
                           f"(null for an outage that never ends)")
    raw_outage = data.get("outage_seconds")
    outage = (None if raw_outage is None
              else Range.parse(raw_outage, f"{where}.outage_seconds"))
    delay = Range.parse(data.get("outage_delay_seconds", 0),
                        f"{where}.outage_delay_seconds")
    reboot = data.get("guest_reboot", False)
    if not isinstance(reboot, bool):
        raise ProfileError(f"{where}.guest_reboot: true or false, "
                           f"got {reboot!r}")
    blackhole = None
    if "ssh_blackhole_seconds" in data:
        raw = data["ssh_blackhole_seconds"]
        blackhole = (FOREVER if raw is None else
                     Range.parse(raw, f"{where}.ssh_blackhole_seconds"))
    network_loss = None
    if data.get("network_loss_seconds") is not None:
        network_loss = Range.parse(data["network_loss_seconds"],
                                   f"{where}.network_loss_seconds")
    return Outcome(float(weight),
                   {FaultKind(kind): w for kind, w in kinds.items()},
                   outage, delay, guest_reboot=reboot,
                   ssh_blackhole=blackhole, network_loss=network_loss)


def _fault_spec(data: Any, where: str) -> FaultSpec:
    if not isinstance(data, Mapping) or "message" not in data:
        raise ProfileError(f"{where}: needs a message")
    return FaultSpec(str(data["message"]), int(data.get("code", 500)),
                     str(data.get("exception", "MigrationError")))


def _vm_knobs(data: Any) -> VmKnobs:
    try:
        return VmKnobs.parse(data)
    except KnobError as error:
        raise ProfileError(str(error)) from error


def _seconds(data: Mapping[str, Any], field: str, default: float) -> float:
    value = data.get(field, default)
    if not isinstance(value, (int, float)) or value < 0:
        raise ProfileError(f"{field}: a number of seconds >= 0")
    return float(value)
