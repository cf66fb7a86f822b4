"""What the VM guests need, checked before the devcloud serves anything.

:func:`problems` lists what is missing as sentences naming what to install
or do; :func:`choose_accelerator` picks KVM where a KVM guest really boots
and TCG otherwise (the verdict is remembered next to the image, per kernel
and QEMU version, because finding out that KVM does not work costs a boot
timeout); :func:`probe_boot` boots one throw-away guest so that a kernel
or QEMU that cannot boot a guest is reported before the task starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from rally_metadata_plugin.devcloud.vm.image import GuestImage
from rally_metadata_plugin.devcloud.vm.network import HostNetwork
from rally_metadata_plugin.devcloud.vm.qemu import (QEMU, QemuError,
                                                   QemuProcess, VmSpec)

LOG = logging.getLogger(__name__)

ACCELERATORS = ("auto", "tcg", "kvm")
#: how long a KVM guest gets to boot before "auto" settles for TCG
KVM_PROBE_SECONDS = 15.0


class PreflightError(RuntimeError):
    """The VM guests cannot run here; the message says what to do."""


def problems() -> list[str]:
    found = []
    if os.geteuid() != 0:
        found.append("the VM guests need root (network namespaces, tap "
                     "devices and iptables): run as root, or use the process "
                     "guests (--guests process, the default)")
    for tool, package in ((QEMU, "qemu-system-x86"), ("ip", "iproute2"),
                          ("iptables", "iptables"), ("curl", "curl"),
                          ("apt-get", "apt"), ("dpkg-deb", "dpkg")):
        if shutil.which(tool) is None:
            found.append(f"the VM guests need {tool} (apt-get install "
                         f"{package})")
    if not Path("/dev/net/tun").exists():
        found.append("the VM guests need /dev/net/tun (load the tun module: "
                     "modprobe tun)")
    return found


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def _verdict_key() -> str:
    version = subprocess.run([QEMU, "--version"], capture_output=True,
                             text=True).stdout.splitlines()[:1]
    return f"{os.uname().release} {' '.join(version)}"


def probe_boot(image: GuestImage, accel: str, network: HostNetwork,
               run_dir: Path, socket_dir: Path, timeout: float) -> float:
    """Boot a throw-away guest on the first host (no metadata needed);
    seconds to its ready mark, or :class:`QemuError`."""
    host = network.hosts[0]
    probe_id = uuid.uuid4().hex[:8]
    tap = f"probe{probe_id[:6]}"
    spec = VmSpec(name=f"{network.prefix}-probe-{probe_id}", image=image,
                  accel=accel, memory_mb=128, tap=tap, mac="fa:16:3e:ff:ff:fe",
                  fixed_ip="", user="cirros", boot_id=f"probe-{probe_id}")
    network.add_tap(host, tap, None)
    process = QemuProcess(spec, run_dir / f"probe-{probe_id}",
                          network.namespace(host), "probe", socket_dir)
    try:
        process.start()
        return process.wait_ready(timeout)
    finally:
        process.kill()
        network.remove_tap(host, tap)


def choose_accelerator(requested: str, image: GuestImage, network: HostNetwork,
                       run_dir: Path, socket_dir: Path,
                       timeout: float) -> tuple[str, float]:
    """The accelerator to use and the probe guest's boot seconds."""
    if requested not in ACCELERATORS:
        raise PreflightError(f"unknown accelerator {requested!r} (one of "
                             f"{', '.join(ACCELERATORS)})")
    candidates = [requested]
    verdicts_path = image.directory.parent / "accelerator.json"
    if requested == "auto":
        candidates = ["tcg"]
        if kvm_usable():
            try:
                verdicts = json.loads(verdicts_path.read_text())
            except (OSError, ValueError):
                verdicts = {}
            if verdicts.get(_verdict_key()) != "tcg":
                candidates = ["kvm", "tcg"]
    for accel in candidates:
        limit = (min(timeout, KVM_PROBE_SECONDS)
                 if accel == "kvm" and requested == "auto" else timeout)
        started = time.monotonic()
        try:
            seconds = probe_boot(image, accel, network, run_dir, socket_dir,
                                 limit)
        except QemuError as error:
            if accel == "kvm" and requested == "auto":
                LOG.warning("a KVM guest did not boot within %.0f s on this "
                            "machine: using TCG (remembered in %s)",
                            time.monotonic() - started, verdicts_path)
                _remember(verdicts_path, "tcg")
                continue
            raise PreflightError(
                f"a test guest did not boot with {accel.upper()}: {error}. "
                f"Check that {QEMU} works (apt-get install --reinstall "
                f"qemu-system-x86), try --vm-accel tcg, or delete "
                f"{image.directory} to rebuild the image") from error
        if accel == "kvm" and requested == "auto":
            _remember(verdicts_path, "kvm")
        return accel, seconds
    raise PreflightError("no accelerator boots a guest here")


def _remember(path: Path, accel: str) -> None:
    try:
        verdicts = json.loads(path.read_text())
    except (OSError, ValueError):
        verdicts = {}
    verdicts[_verdict_key()] = accel
    path.write_text(json.dumps(verdicts, indent=2) + "\n")
