"""A profile's ``vm:`` section: how QEMU migrates (VM guests only).

::

    vm:
      downtime_limit_ms: 300     # QEMU's downtime-limit (its default: 300)
      max_bandwidth_mib: 1024    # MiB/s of the migration stream (QEMU: 32)
      dirty_memory_mb: 0         # MiB the guest keeps rewriting in pre-copy
      auto_converge: false       # CPU throttling when pre-copy cannot converge
      paused: false              # stop the VM for the whole copy ("paused"
                                 # migration): the pause is the copy time

The process guests ignore this section; the VM guests ignore the profile's
drawn ``precopy_seconds`` and ``pause_seconds``: QEMU's pre-copy and pause
are real (``truth.jsonl`` has QEMU's figures). A profile with this section
may use the ``drop`` outage kind, which only the VM guests can inject.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class KnobError(ValueError):
    """The ``vm:`` section is malformed."""


@dataclasses.dataclass(frozen=True)
class VmKnobs:
    downtime_limit_ms: int = 300
    max_bandwidth_mib: int = 1024
    dirty_memory_mb: int = 0
    auto_converge: bool = False
    paused: bool = False

    @classmethod
    def parse(cls, data: Any) -> "VmKnobs":
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise KnobError("vm: a mapping of QEMU migration settings")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise KnobError(f"vm: unknown setting {', '.join(unknown)} "
                            f"(known: {', '.join(fields)})")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if fields[name].type == "bool":
                if not isinstance(value, bool):
                    raise KnobError(f"vm.{name}: true or false, got {value!r}")
            elif (not isinstance(value, int) or isinstance(value, bool)
                  or value < 0):
                raise KnobError(f"vm.{name}: an integer >= 0, got {value!r}")
            values[name] = value
        knobs = cls(**values)
        if knobs.max_bandwidth_mib == 0:
            raise KnobError("vm.max_bandwidth_mib: at least 1")
        return knobs

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
