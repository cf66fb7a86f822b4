"""The VM guest backend assembled: preflight, image, host namespaces,
metadata services and guests, started and stopped together
(:class:`~..cloud.DevCloud` uses it for ``guests="vm"``)."""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
from pathlib import Path

from rally_metadata_plugin.devcloud.config import DevCloudConfig
from rally_metadata_plugin.devcloud.metadata import STALL_LOG
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.profiles import Profile
from rally_metadata_plugin.devcloud.timers import TimerThread
from rally_metadata_plugin.devcloud.vm import image, network, preflight
from rally_metadata_plugin.devcloud.vm.hypervisor import VmGuests, VmSettings
from rally_metadata_plugin.devcloud.vm.metadata import VmMetadataService

LOG = logging.getLogger(__name__)

_SERIALS = itertools.count(1)


class VmBackend:
    """Start with :meth:`start` (raises
    :class:`~.preflight.PreflightError` or :class:`~.image.ImageError` with
    what to install); :meth:`stop` kills every QEMU and deletes every
    namespace and device, and is idempotent."""

    def __init__(self, config: DevCloudConfig, backend: CloudBackend,
                 timers: TimerThread, state_dir: Path,
                 profile: Profile) -> None:
        self._config = config
        self._backend = backend
        self._timers = timers
        self._state = state_dir
        self._profile = profile
        self.network: network.HostNetwork | None = None
        self.metadata: VmMetadataService | None = None
        self.guests: VmGuests | None = None
        self.accel: str | None = None
        self.probe_boot_seconds: float | None = None
        self._sockets: Path | None = None

    def start(self) -> VmGuests:
        config = self._config
        found = preflight.problems()
        if found:
            raise preflight.PreflightError("; ".join(found))
        unsupported = [f"outcome {i}" for i, o in
                       enumerate(self._profile.outcomes)
                       if o.guest_reboot or o.ssh_blackhole is not None]
        if unsupported:
            raise preflight.PreflightError(
                f"profile {self._profile.name}: guest_reboot and "
                f"ssh_blackhole_seconds ({', '.join(unsupported)}) are not "
                f"implemented for VM guests; use the process guests")
        guest_image = image.ensure_image()
        stale = network.sweep_stale()
        if stale:
            LOG.warning("removed what stopped VM devclouds left: %s",
                        ", ".join(stale))
        self.network = network.HostNetwork(config.host_names,
                                           config.floating_cidr,
                                           next(_SERIALS))
        busy = self.network.check_free()
        if busy:
            raise preflight.PreflightError(busy)
        self.network.setup()
        run_dir = self._state / "vms"
        # QMP and migration sockets: short paths (at most 107 bytes)
        self._sockets = Path(tempfile.mkdtemp(prefix=f"{self.network.prefix}-"))
        self.accel, self.probe_boot_seconds = preflight.choose_accelerator(
            config.vm_accel, guest_image, self.network, run_dir,
            self._sockets, config.vm_boot_timeout)
        LOG.info("VM guests: %s, test guest booted in %.2f s", self.accel,
                 self.probe_boot_seconds)
        self.metadata = VmMetadataService(self._backend, self.network,
                                          self._timers, config.hang_limit,
                                          config.metadata_connection_limit,
                                          self._state / STALL_LOG)
        self.guests = VmGuests(
            self._backend, self.network, self.metadata, guest_image,
            VmSettings(self.accel, config.vm_memory_mb,
                       config.vm_boot_timeout, config.ssh_user,
                       self._profile.vm),
            run_dir, self._sockets)
        return self.guests

    def stop(self) -> None:
        if self.guests is not None:
            self.guests.stop()
        if self.metadata is not None:
            self.metadata.stop()
        if self.network is not None:
            self.network.teardown()
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)

    def processes(self) -> dict[str, list[int]]:
        """Live QEMU processes of this devcloud, by server."""
        if self.guests is None:
            return {}
        return self.guests.processes()

    def leftovers(self) -> dict:
        """QEMU processes, namespaces and devices still there."""
        if self.network is None:
            return {}
        return {"qemu_processes": self.guests.leftovers() if self.guests else [],
                **self.network.leftovers()}
