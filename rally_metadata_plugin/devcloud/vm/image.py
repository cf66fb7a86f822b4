"""The guest image: a Debian kernel and a CirrOS-like initramfs, built once.

What the guest has, as on CirrOS: busybox ``sh`` and its applets, ``curl``,
an SSH server (dropbear), a user (``cirros`` by default) whose
``authorized_keys`` and the machine's hostname come from the metadata
service at boot, as cloud-init sets them. Its ``/init`` (:data:`INIT`)
reads its address from the kernel command line (``rmp.ip=``), loads the
virtio network driver, asks 169.254.169.254 for its hostname and key
(with busybox ``wget``: see below), starts dropbear and prints
:data:`READY_MARK` on the serial console.

Where things come from, without installing anything system-wide:

* ``apt-get download`` + ``dpkg -x`` (into a scratch directory): the kernel
  package ``linux-image-amd64`` points at (its vmlinuz and the virtio
  modules), ``busybox-static``, ``dropbear-bin`` and the libraries it needs
  that this machine lacks;
* this machine: ``curl`` and its shared libraries (``apt-get install
  curl``), found with ``ldd``.

The result, ``vmlinux`` and ``initrd.img``, lives in ``$RMP_VM_IMAGE_DIR`` (default
``~/.cache/rally-metadata-plugin/vm-image``) under a directory named after
:data:`BUILD_VERSION`, and is reused; delete it to rebuild.

Both are stored uncompressed because decompressing is what makes a TCG
guest boot slowly (measured here: 5.3 s from QEMU's start to userland with
Debian's xz-compressed bzImage and a gzipped initramfs, 2.5-3 s with the
ELF ``vmlinux`` booted through its PVH entry and a plain cpio):
``vmlinux`` is unpacked from the bzImage here (Python's ``lzma``), the
initramfs is a newc cpio written here (no ``cpio`` tool needed).

A boot under TCG is CPU-bound: what one costs decides how many guests boot
at once in time (a task of concurrency 4 boots 4 on a 2-core machine). So
the guest does as little as a test guest needs. Measured here with
``tools/bench_vm_boot.py`` on an otherwise idle 2-core machine (5 rounds):
one guest alone used 2.7 CPU seconds from QEMU's start to its ready mark
before these cuts (2.8 s of wall time), 1.7 s after (1.8 s); 4 booting at
once each reached its mark in 7.3 s on average, 7.7 s at most, before,
4.5 s and 4.9 s after. The guest's clock read 1.55 s when ``/init``
started and 2.3 s at the ready mark before, 1.15 s and 1.4 s after:

* the kernel command line skips work (``BOOT_CUTS`` in :mod:`.qemu`: the
  crypto self-tests, the read-only kernel's W+X walk, zeroing at every
  allocation, the security modules and audit, the ACPI interpreter's PCI
  scan and interrupt links): about 0.4 s of kernel time;
* the modules' signatures are stripped (:func:`strip_module_signature`):
  verifying them (SHA-512 and RSA at each ``insmod``) took 0.2 s, loading
  the eight unsigned ones takes 0.06 s;
* the metadata is fetched with busybox's static ``wget`` instead of
  ``curl``, which loads about 30 shared libraries and initialises OpenSSL
  at each start: 0.14 s a request under TCG, 0.01 s with ``wget``
  (``curl`` stays in the guest for its users). busybox 1.35's ``wget -T``
  crashes (a static binary), hence ``timeout`` around it.

What is left is mostly the kernel's own boot (0.3 s alone patching the
alternatives, the return thunks and retpolines of about 60,000 call sites:
fixed in the kernel, whatever the command line); the initramfs' size does
not matter much (20 MB more cost no measurable CPU), and Debian's cloud
kernel (``linux-image-cloud-amd64``, fewer built-in drivers) saved nothing
measurable once these cuts were made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Iterable

LOG = logging.getLogger(__name__)

#: Bump when the recipe changes: a new directory is built, old ones stay
#: (a change of :data:`INIT` changes the directory by itself).
BUILD_VERSION = "v3"

#: What the guest prints on its console once SSH and metadata work.
READY_MARK = "rmp-guest-ready"

#: The kernel modules the guest needs, in load order (Debian builds virtio
#: and the virtio NIC as modules).
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev",
           "virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover",
           "virtio_net")

#: The link-local gateway every host namespace answers on each guest's tap:
#: the same on every host, so a migrated guest's ARP entry stays valid.
GATEWAY = "169.254.0.1"

#: Run as PID 1. Kernel command line parameters: rmp.ip (the fixed IP),
#: rmp.user (the login), rmp.dirty_mb (memory the guest keeps rewriting,
#: for real pre-copy convergence), rmp.boot_id (echoed in the ready mark).
#: Without rmp.ip (the preflight's probe guest) it skips network and metadata.
INIT = r"""#!/bin/sh
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
for m in @MODULES@; do insmod /lib/modules/$m.ko || echo "rmp-init: insmod $m failed"; done
ip=; user=cirros; dirty_mb=0; boot_id=
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case $arg in
        rmp.ip=*) ip=${arg#rmp.ip=} ;;
        rmp.user=*) user=${arg#rmp.user=} ;;
        rmp.dirty_mb=*) dirty_mb=${arg#rmp.dirty_mb=} ;;
        rmp.boot_id=*) boot_id=${arg#rmp.boot_id=} ;;
    esac
done
ip link set lo up
name=
if [ -n "$ip" ]; then
    n=0
    while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do usleep 20000; n=$((n+1)); done
    ip link set eth0 up
    ip addr add "$ip/32" dev eth0
    ip route add @GATEWAY@ dev eth0
    ip route add default via @GATEWAY@ dev eth0
    md=http://169.254.169.254/latest/meta-data
    n=0
    while [ -z "$name" ] && [ $n -lt 100 ]; do
        name=$(timeout 1 wget -q -O - $md/hostname) || { name=; usleep 100000; }
        n=$((n+1))
    done
fi
[ -n "$name" ] || name=cirros
hostname "$name"
echo "$name" > /etc/hostname
echo "$user:*:1000:1000:$user:/home/$user:/bin/sh" >> /etc/passwd
echo "$user:x:1000:" >> /etc/group
mkdir -p /home/$user/.ssh
[ -z "$ip" ] || timeout 2 wget -q -O - $md/public-keys/0/openssh-key > /home/$user/.ssh/authorized_keys
chmod 700 /home/$user/.ssh; chmod 600 /home/$user/.ssh/authorized_keys
chown -R 1000:1000 /home/$user
dropbear -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key \
    -r /etc/dropbear/dropbear_ecdsa_host_key -r /etc/dropbear/dropbear_rsa_host_key
if [ "$dirty_mb" -gt 0 ]; then
    # rewrite dirty_mb MiB of page cache forever: pre-copy must converge
    (while :; do yes rmp-dirty-memory | head -c $((dirty_mb * 1048576)) > /run/dirty; done) &
fi
read -r uptime _ < /proc/uptime
echo "@READY_MARK@ $boot_id $name $uptime"
while :; do sleep 3600; done
"""


class ImageError(RuntimeError):
    """The guest image cannot be built; the message says what to install."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    """A built image: what QEMU's ``-kernel`` and ``-initrd`` take."""

    directory: Path
    kernel: Path
    initrd: Path
    manifest: dict

    @classmethod
    def load(cls, directory: Path) -> "GuestImage | None":
        manifest = directory / "manifest.json"
        if not manifest.is_file():
            return None
        return cls(directory, directory / "vmlinux", directory / "initrd.img",
                   json.loads(manifest.read_text()))


def default_cache_dir() -> Path:
    explicit = os.environ.get("RMP_VM_IMAGE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rally-metadata-plugin" / "vm-image"


def build_name() -> str:
    """The cache directory of this recipe: version and the init's hash."""
    digest = hashlib.sha256(render_init().encode()).hexdigest()[:10]
    return f"{BUILD_VERSION}-{digest}"


def render_init() -> str:
    return (INIT.replace("@MODULES@", " ".join(MODULES))
            .replace("@GATEWAY@", GATEWAY)
            .replace("@READY_MARK@", READY_MARK))


# -- a newc cpio archive (what the kernel unpacks as initramfs) --------------------

class Cpio:
    """Writes a ``newc`` cpio archive: files, directories, symlinks and
    device nodes, all owned by root, without touching the filesystem."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.lstrip("/")
        if name in self._names:
            return
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0],
                  rdev[1], len(encoded), 0)
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def directory(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.directory(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self.directory(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


# -- building ---------------------------------------------------------------------

def ensure_image(cache_dir: Path | None = None) -> GuestImage:
    """The cached image, built first if missing (about a minute: the kernel
    package is about 70 MB). Raises :class:`ImageError` with what to do."""
    root = (cache_dir or default_cache_dir()) / build_name()
    image = GuestImage.load(root)
    if image is not None and image.kernel.is_file() and image.initrd.is_file():
        return image
    started = time.monotonic()
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rmp-vm-image-",
                                     dir=root.parent) as scratch:
        staged = Path(scratch) / "image"
        manifest = _build(Path(scratch), staged)
        manifest["build_seconds"] = round(time.monotonic() - started, 1)
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if root.exists():            # a concurrent build won: keep its image
            shutil.rmtree(staged)
        else:
            staged.rename(root)
    LOG.info("guest image built in %s", root)
    return GuestImage.load(root)


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ImageError(f"building the VM guest image needs {tool} "
                         f"(apt-get install {package})")
    return path


def _apt_download(names: Iterable[str], into: Path) -> list[Path]:
    _require("apt-get", "apt")
    _require("dpkg-deb", "dpkg")
    into.mkdir(parents=True, exist_ok=True)
    into.chmod(0o777)            # apt's sandbox user writes the download
    names = list(names)
    for attempt in (1, 2):
        result = subprocess.run(["apt-get", "download", "-qq", *names],
                                cwd=into, capture_output=True, text=True)
        if result.returncode == 0:
            break
        if attempt == 1 and os.geteuid() == 0:
            # a fresh container has no package lists yet
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            continue
        raise ImageError(f"apt-get download {' '.join(names)} failed: "
                         f"{result.stderr.strip()[-400:]} (run apt-get update "
                         f"as root, and check that the package registry is "
                         f"reachable)")
    return sorted(into.glob("*.deb"))


def _kernel_package() -> str:
    """The versioned kernel package the metapackage depends on."""
    result = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                            capture_output=True, text=True)
    found = re.findall(r"Depends:\s+(linux-image-\S+)", result.stdout)
    if not found:
        raise ImageError("apt knows no linux-image-amd64 (run apt-get update "
                         "as root; this needs Debian's package lists)")
    return found[0]


def _depends(deb: Path) -> list[str]:
    text = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"],
                          capture_output=True, text=True).stdout
    return [alt.split("|")[0].split("(")[0].strip()
            for alt in text.split(",") if alt.strip()]


def _build(scratch: Path, out: Path) -> dict:
    curl = _require("curl", "curl")
    _require("ldd", "libc-bin")
    kernel_pkg = _kernel_package()
    debs = _apt_download([kernel_pkg, "busybox-static", "dropbear-bin"],
                         scratch / "deb")
    dropbear_deb = next(d for d in debs if d.name.startswith("dropbear-bin"))
    libs = [d for d in _depends(dropbear_deb) if d.startswith("lib")
            and d not in ("libc6",)]
    debs += _apt_download(libs, scratch / "deb-libs")
    tree = scratch / "tree"
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise ImageError(f"{kernel_pkg} holds no /boot/vmlinuz-*")
    release = vmlinuz[0].name[len("vmlinuz-"):]
    modules = tree / "lib" / "modules" / release / "kernel"
    archive = Cpio()
    for name in ("proc", "sys", "dev", "tmp", "run", "root", "home", "etc",
                 "var/log", "lib/modules", "etc/dropbear"):
        archive.directory(name)
    archive.char_device("dev/console", 5, 1)
    archive.char_device("dev/null", 1, 3)
    archive.file("init", render_init().encode(), 0o755)
    archive.file("etc/passwd", b"root:*:0:0:root:/root:/bin/sh\n")
    archive.file("etc/group", b"root:x:0:\n")
    archive.file("etc/shells", b"/bin/sh\n")
    archive.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\n")
    for module in MODULES:
        found = list(modules.rglob(f"{module}.ko"))
        if not found:
            raise ImageError(f"{kernel_pkg} has no {module}.ko")
        archive.file(f"lib/modules/{module}.ko",
                     strip_module_signature(found[0].read_bytes()))
    busybox = tree / "bin" / "busybox"
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = subprocess.run([str(busybox), "--list-full"], check=True,
                             capture_output=True, text=True).stdout.split()
    for applet in applets:
        archive.symlink(applet, "/bin/busybox")
    dropbear = tree / "usr" / "sbin" / "dropbear"
    dropbearkey = tree / "usr" / "bin" / "dropbearkey"
    lib_dirs = [tree / "usr" / "lib" / "x86_64-linux-gnu",
                tree / "lib" / "x86_64-linux-gnu"]
    for binary, dest in ((dropbear, "usr/sbin/dropbear"),
                         (Path(curl), "usr/bin/curl")):
        archive.file(dest, binary.read_bytes(), 0o755)
        for lib in _shared_libraries(binary, lib_dirs):
            archive.file(_guest_path(lib, tree), lib.read_bytes(), 0o755)
    # host keys made here once: generating RSA under TCG at each boot is slow
    keys = scratch / "keys"
    keys.mkdir()
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(map(str, lib_dirs))}
    for kind, extra in (("ed25519", []), ("ecdsa", []),
                        ("rsa", ["-s", "2048"])):
        key = keys / f"dropbear_{kind}_host_key"
        subprocess.run([str(dropbearkey), "-t", kind, *extra, "-f", str(key)],
                       check=True, capture_output=True, env=env)
        archive.file(f"etc/dropbear/{key.name}", key.read_bytes(), 0o600)
    out.mkdir(parents=True)
    (out / "vmlinux").write_bytes(unpack_bzimage(vmlinuz[0].read_bytes()))
    (out / "initrd.img").write_bytes(archive.finish())
    return {"build_version": build_name(), "kernel_package": kernel_pkg,
            "kernel_release": release,
            "packages": sorted(d.name for d in debs), "curl": curl}


#: What ends a signed kernel module (``scripts/sign-file``): the signature,
#: a 12-byte ``struct module_signature`` whose last 4 bytes are the
#: signature's length (big endian), then this marker.
MODULE_SIGNATURE_MARKER = b"~Module signature appended~\n"


def strip_module_signature(module: bytes) -> bytes:
    """The module without its appended signature (unchanged if unsigned).

    Debian's kernel checks a signed module's SHA-512 and RSA signature at
    each ``insmod``, under TCG a noticeable part of the guest's userland
    boot; an unsigned module loads without the check (the kernel does not
    enforce signatures: it notes a taint once)."""
    if not module.endswith(MODULE_SIGNATURE_MARKER):
        return module
    end = len(module) - len(MODULE_SIGNATURE_MARKER)
    signature_length = int.from_bytes(module[end - 4:end], "big")
    return module[:end - 12 - signature_length]


def unpack_bzimage(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (xz or gzip payload): QEMU boots it
    through its PVH entry without the slow in-guest decompression."""
    for magic, decompress in ((b"\xfd7zXZ\x00", _unxz), (b"\x1f\x8b\x08", _gunzip)):
        start = bzimage.find(magic)
        if start < 0:
            continue
        try:
            elf = decompress(bzimage[start:])
        except (lzma.LZMAError, OSError, EOFError):
            continue
        if elf.startswith(b"\x7fELF"):
            return elf
    raise ImageError("the kernel image holds no xz or gzip compressed ELF "
                     "kernel (not a Debian amd64 bzImage?)")


def _unxz(data: bytes) -> bytes:
    # the payload is followed by the bzImage's trailer: stop at the end
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _gunzip(data: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def _shared_libraries(binary: Path, lib_dirs: list[Path]) -> list[Path]:
    """Every shared object ``binary`` loads (the dynamic loader included),
    found first in the extracted packages, then on this machine."""
    env = {**os.environ,
           "LD_LIBRARY_PATH": ":".join(str(d) for d in lib_dirs)}
    result = subprocess.run(["ldd", str(binary)], capture_output=True,
                            text=True, env=env)
    libs: list[Path] = []
    for line in result.stdout.splitlines():
        if "not found" in line:
            raise ImageError(f"{binary.name} needs {line.split()[0]}, which "
                             f"neither the downloaded packages nor this "
                             f"machine has")
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


def _guest_path(lib: Path, tree: Path) -> str:
    """Where a library goes in the guest: its path on a Debian system."""
    try:
        relative = lib.relative_to(tree)
    except ValueError:
        relative = lib.relative_to("/")
    text = str(relative)
    # merged /usr: Debian's loader looks in /lib{,64}/..., which are links
    if text.startswith("usr/lib/x86_64-linux-gnu/"):
        text = "lib/x86_64-linux-gnu/" + text[len("usr/lib/x86_64-linux-gnu/"):]
    return text


def main() -> int:
    """``python -m rally_metadata_plugin.devcloud.vm.image``: build the image
    now (CI does, before its tests run in network namespaces without the
    package registry) and print its directory."""
    import sys
    try:
        image = ensure_image()
    except ImageError as error:
        print(f"building the VM guest image: {error}", file=sys.stderr)
        return 1
    print(image.directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
