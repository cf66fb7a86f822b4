"""One QEMU process per running instance (two while it migrates).

:func:`qemu_argv` is the command line (pure; :func:`kernel_command_line`
is the guest's, which skips boot work a test guest does not need:
:data:`BOOT_CUTS`); :class:`QemuProcess` runs it inside a host's network
namespace (``ip netns exec``), with a parent-death signal so that a
SIGKILLed devcloud leaves no QEMU behind, and watches the serial console
for the guest's ready mark. Every QEMU of a devcloud is
named ``-name <prefix>-<server>`` so that :func:`own_processes` finds those
left behind.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from rally_metadata_plugin.devcloud import boottime, lifetime
from rally_metadata_plugin.devcloud.procfs import (kill_until_gone, pids,
                                                   proc_argv)
from rally_metadata_plugin.devcloud.vm.image import READY_MARK, GuestImage
from rally_metadata_plugin.devcloud.vm.qmp import QmpClient, QmpError

QEMU = "qemu-system-x86_64"
QBOOT = Path("/usr/share/qemu/qboot.rom")
#: how often :meth:`QemuProcess.wait_ready` looks for the ready mark
READY_POLL_SECONDS = 0.02


@dataclasses.dataclass(frozen=True)
class VmSpec:
    """Everything both ends of a migration must agree on."""

    name: str
    image: GuestImage
    accel: str                      # "tcg" or "kvm"
    memory_mb: int
    tap: str
    mac: str
    fixed_ip: str
    user: str
    dirty_memory_mb: int = 0
    boot_id: str = ""


#: Kernel parameters that skip boot work a throw-away test guest does not
#: need: a TCG guest's boot is CPU-bound, and what it costs decides how many
#: guests boot at once in time on a small machine (see :mod:`.image` for
#: the figures).
BOOT_CUTS = (
    # the crypto API's self-tests of every algorithm registered at boot,
    # and the one the SP800-108 KDF runs in its initcall (nothing else)
    "cryptomgr.notests", "initcall_blacklist=crypto_kdf108_init",
    # no read-only kernel text and data, hence no walk of every page table
    # entry checking that none is writable and executable (CONFIG_DEBUG_WX)
    "rodata=off",
    # pages and slab objects are not zeroed at every allocation (Debian's
    # hardening default)
    "init_on_alloc=0",
    # no AppArmor, Landlock, Yama, TOMOYO, BPF or integrity modules, no audit
    "lsm=capability", "audit=0",
    # the PCI bus scanned directly, not through the ACPI interpreter (its
    # root bridge, hotplug slots and interrupt links are AML, slow under
    # TCG); ACPI stays on for the HPET. The NIC uses MSI-X, so its INTx
    # pin needs no route (the kernel notes it cannot find one).
    "pci=noacpi",
)


def kernel_command_line(spec: VmSpec) -> str:
    return " ".join([
        "console=ttyS0", "quiet", "panic=-1",
        # a loaded host makes the IO-APIC timer check of an emulated guest
        # fail ("8254 timer not connected"): cloud images skip it too
        "no_timer_check",
        # the guest's clock must run at the host's rate: under TCG the TSC's
        # frequency is calibrated at boot, and a busy host skews it by a
        # percent or more (100 ms over a 10 s migration window, the pause
        # estimate's whole budget); QEMU's HPET runs at exactly 100 MHz of
        # its virtual clock, which stops only while the VM is paused
        "clocksource=hpet",
        *BOOT_CUTS,
        f"rmp.ip={spec.fixed_ip}", f"rmp.user={spec.user}",
        f"rmp.dirty_mb={spec.dirty_memory_mb}", f"rmp.boot_id={spec.boot_id}"])


def qemu_argv(spec: VmSpec, qmp_path: Path, console_path: Path,
              incoming: bool = False, qemu: str = QEMU) -> list[str]:
    """QEMU's command line; the destination of a migration adds
    ``-incoming defer`` (its migration socket is opened through QMP)."""
    argv = [qemu, "-name", f"{spec.name},process={spec.name[-15:]}",
            "-machine", f"pc,accel={spec.accel}", "-m", str(spec.memory_mb),
            "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot",
            "-kernel", str(spec.image.kernel), "-initrd",
            str(spec.image.initrd), "-append", kernel_command_line(spec),
            "-chardev", f"file,id=console,path={console_path}",
            "-serial", "chardev:console",
            "-netdev", f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={spec.mac},romfile=",
            "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    if spec.accel == "kvm":
        argv += ["-cpu", "host"]
    if QBOOT.is_file():
        # a minimal firmware: SeaBIOS takes noticeably longer under TCG
        argv += ["-bios", str(QBOOT)]
    if incoming:
        argv += ["-incoming", "defer"]
    return argv


class QemuError(RuntimeError):
    """QEMU would not start or its guest would not boot."""


class _Spawner:
    """Starts processes from one thread that lives as long as this process.

    The kernel sends a parent-death signal when the *thread* that forked a
    child exits, not the process: a QEMU started by a migration's thread
    would be killed when that migration ends. So every QEMU is forked here.
    """

    def __init__(self) -> None:
        self._requests: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve,
                                                name="qemu-spawner",
                                                daemon=True)
                self._thread.start()
        done: queue.Queue = queue.Queue()
        self._requests.put((argv, kwargs, done))
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            argv, kwargs, done = self._requests.get()
            try:
                done.put((True, subprocess.Popen(argv, **kwargs)))
            except BaseException as error:   # handed to the caller
                done.put((False, error))


_SPAWNER = _Spawner()


class QemuProcess:
    """A QEMU in a host's namespace, with its QMP connection."""

    def __init__(self, spec: VmSpec, run_dir: Path, namespace: str,
                 role: str, socket_dir: Path, incoming: bool = False) -> None:
        self.spec = spec
        self.namespace = namespace
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        # a unix socket's path has at most 107 bytes: not in the state dir
        self.qmp_path = socket_dir / f"{spec.boot_id}-{role}.qmp"
        self.console_path = self.dir / f"{role}.console"
        self.log_path = self.dir / f"{role}.log"
        self.incoming = incoming
        self.process: subprocess.Popen | None = None
        self.qmp: QmpClient | None = None
        self.started_at = 0.0

    def start(self) -> "QemuProcess":
        for path in (self.qmp_path, self.console_path):
            path.unlink(missing_ok=True)
        qemu = shutil.which(QEMU)
        if qemu is None:
            raise QemuError(f"{QEMU} is not installed (apt-get install "
                            f"qemu-system-x86)")
        argv = ["ip", "netns", "exec", self.namespace,
                *qemu_argv(self.spec, self.qmp_path, self.console_path,
                           self.incoming, qemu)]
        self.started_at = boottime.now()
        with open(self.log_path, "wb") as log:
            self.process = _SPAWNER.popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
                preexec_fn=lifetime.child_dies_with_parent(signal.SIGKILL))
        try:
            self.qmp = QmpClient(str(self.qmp_path)).connect(
                timeout=20, alive=lambda: self.process.poll() is None)
        except QmpError as error:
            self.kill()
            raise QemuError(f"QEMU did not start: {error}; its output: "
                            f"{self.log_tail()}") from error
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def console_tail(self, chars: int = 800) -> str:
        try:
            return self.console_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def ready_line(self) -> str | None:
        """The guest's ready line for this boot, once printed."""
        try:
            text = self.console_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(f"{READY_MARK} {self.spec.boot_id} "):
                return line
        return None

    def wait_ready(self, timeout: float) -> float:
        """Seconds from QEMU's start to the guest's ready mark."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_line() is not None:
                return boottime.now() - self.started_at
            if not self.alive():
                raise QemuError(f"QEMU exited while the guest booted: "
                                f"{self.log_tail()}")
            # the mark is seen at most this late: a small part of a boot
            # (reading a quiet guest's console costs next to nothing)
            time.sleep(READY_POLL_SECONDS)
        raise QemuError(
            f"the guest did not boot within {timeout:g} s (accelerator "
            f"{self.spec.accel}); the end of its console: "
            f"{self.console_tail()!r}")

    def kill(self) -> None:
        """Stop QEMU now (SIGKILL: nothing of the guest needs saving)."""
        if self.qmp is not None:
            self.qmp.close()
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.kill(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def process_name(pid: int) -> str | None:
    """The ``-name`` of a QEMU process (without its options), else None."""
    argv = proc_argv(pid)
    if argv and argv[0].endswith(QEMU) and "-name" in argv[:-1]:
        return argv[argv.index("-name") + 1].split(",")[0]
    return None


def own_processes(name_prefix: str) -> list[int]:
    """Live QEMU processes whose ``-name`` starts with ``name_prefix``."""
    return [pid for pid in pids()
            if (process_name(pid) or "").startswith(name_prefix)]


def kill_own_processes(name_prefix: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every QEMU of a devcloud (those left behind included)."""
    killed, _ = kill_until_gone(lambda: own_processes(name_prefix), timeout)
    return killed
