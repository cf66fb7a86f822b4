"""The VM guest backend's pure parts: image recipe, cpio, QEMU's command
line, profile knobs, the per-host metadata answers, names, accuracy."""

from __future__ import annotations

import gzip
import json
import lzma
import stat
import subprocess

import pytest

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import accuracy
from rally_metadata_plugin.devcloud.config import (PROCESS_FLOATING_CIDR,
                                                   VM_FLOATING_CIDR,
                                                   DevCloudConfig)
from rally_metadata_plugin.devcloud.model.outages import (InstanceIdentity,
                                                          MetadataView, Outage)
from rally_metadata_plugin.devcloud.profiles import Profile, ProfileError
from rally_metadata_plugin.devcloud.vm import image, network
from rally_metadata_plugin.devcloud.vm.knobs import KnobError, VmKnobs
from rally_metadata_plugin.devcloud.metadata import answer
from rally_metadata_plugin.devcloud.vm.qemu import (VmSpec,
                                                    kernel_command_line,
                                                    qemu_argv)
from repo_tools import load_tool


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdev major, minor)) of a newc archive."""
    entries, offset = {}, 0
    while True:
        header = data[offset:offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        name_size, size = fields[11], fields[6]
        name = data[offset + 110:offset + 110 + name_size - 1].decode()
        offset += 110 + name_size
        offset += -offset % 4
        body = data[offset:offset + size]
        offset += size
        offset += -offset % 4
        if name == "TRAILER!!!":
            assert offset == len(data)
            return entries
        entries[name] = (fields[1], body, (fields[9], fields[10]))


def test_cpio_holds_files_links_devices_and_parent_directories():
    archive = image.Cpio()
    archive.file("usr/bin/tool", b"#!/bin/sh\n", 0o755)
    archive.symlink("bin/sh", "/bin/busybox")
    archive.char_device("dev/console", 5, 1)
    archive.file("usr/bin/tool", b"ignored: first one wins")
    entries = read_cpio(archive.finish())
    assert stat.S_ISDIR(entries["usr"][0]) and stat.S_ISDIR(entries["usr/bin"][0])
    mode, body, _ = entries["usr/bin/tool"]
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o755
    assert body == b"#!/bin/sh\n"
    mode, target, _ = entries["bin/sh"]
    assert stat.S_ISLNK(mode) and target == b"/bin/busybox"
    mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5, 1)


def test_init_script_and_its_cache_directory():
    init = image.render_init()
    assert init.startswith("#!/bin/sh\n")
    assert "@" not in init.replace("$user:", "")      # every placeholder filled
    assert f"via {image.GATEWAY} dev eth0" in init
    assert image.READY_MARK in init
    for module in image.MODULES:
        assert module in init
    # the load order matters: virtio needs virtio_ring's symbols
    assert image.MODULES.index("virtio_ring") < image.MODULES.index("virtio")
    assert image.MODULES[-1] == "virtio_net"
    assert image.build_name().startswith(image.BUILD_VERSION + "-")


def test_the_elf_kernel_is_unpacked_from_a_bzimage():
    elf = b"\x7fELF" + bytes(range(256)) * 64
    for packed in (lzma.compress(elf, format=lzma.FORMAT_XZ), gzip.compress(elf)):
        bzimage = b"MZ setup code \x00\x01" + packed + b"trailer"
        assert image.unpack_bzimage(bzimage) == elf
    with pytest.raises(image.ImageError, match="no xz or gzip"):
        image.unpack_bzimage(b"MZ nothing inside")


def test_module_signatures_are_stripped():
    body = b"\x7fELF module body"
    signature = b"S" * 681
    info = bytes(8) + (681).to_bytes(4, "big")      # struct module_signature
    signed = body + signature + info + image.MODULE_SIGNATURE_MARKER
    assert image.strip_module_signature(signed) == body
    assert image.strip_module_signature(body) == body


def test_the_init_fetches_metadata_without_a_dynamically_linked_binary():
    init = image.render_init()
    # curl (30 shared libraries under TCG) stays in the guest for its users
    assert "curl" not in init
    assert "timeout 1 wget -q -O - $md/hostname" in init


def test_a_missing_image_is_built_once_and_reused(tmp_path, monkeypatch):
    calls = []

    def fake_build(scratch, out):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "vmlinux").write_bytes(b"\x7fELF")
        (out / "initrd.img").write_bytes(b"070701")
        return {"build_version": image.build_name()}

    monkeypatch.setattr(image, "_build", fake_build)
    first = image.ensure_image(tmp_path)
    second = image.ensure_image(tmp_path)
    assert len(calls) == 1 and first == second
    assert first.directory == tmp_path / image.build_name()
    assert first.kernel.read_bytes() == b"\x7fELF"
    assert "build_seconds" in first.manifest


SPEC = VmSpec(name="rmpvm-1-1-abc", image=image.GuestImage(
    image.Path("/img"), image.Path("/img/vmlinux"), image.Path("/img/initrd.img"), {}),
    accel="tcg", memory_mb=192, tap="tapabc", mac="fa:16:3e:00:00:01",
    fixed_ip="10.0.0.5", user="cirros", dirty_memory_mb=32, boot_id="abc")


def test_qemu_command_lines_of_both_ends_of_a_migration_match():
    source = qemu_argv(SPEC, image.Path("/r/s.qmp"), image.Path("/r/s.console"))
    destination = qemu_argv(SPEC, image.Path("/r/d.qmp"), image.Path("/r/d.console"),
                            incoming=True)
    assert destination[-2:] == ["-incoming", "defer"]
    assert "-incoming" not in source

    def devices(argv):      # what QEMU migrates must be the same on both ends
        return [a for a in argv if "qmp" not in a and "console" not in a
                and a not in ("-incoming", "defer")]

    assert devices(source) == devices(destination)
    assert "pc,accel=tcg" in source and "-cpu" not in source
    assert any(a.startswith("tap,id=net0,ifname=tapabc,") for a in source)
    assert "virtio-net-pci,netdev=net0,mac=fa:16:3e:00:00:01,romfile=" in source
    line = kernel_command_line(SPEC)
    assert "rmp.ip=10.0.0.5" in line and "rmp.dirty_mb=32" in line
    assert "rmp.boot_id=abc" in line and "console=ttyS0" in line
    assert "clocksource=hpet" in line and "cryptomgr.notests" in line
    assert "acpi=off" not in line            # the HPET is found through ACPI
    kvm = qemu_argv(VmSpec(**{**SPEC.__dict__, "accel": "kvm"}),
                    image.Path("q"), image.Path("c"))
    assert kvm[kvm.index("-cpu") + 1] == "host"


def test_vm_knobs():
    assert VmKnobs.parse(None) == VmKnobs()
    knobs = VmKnobs.parse({"downtime_limit_ms": 50, "paused": True,
                           "dirty_memory_mb": 16})
    assert (knobs.downtime_limit_ms, knobs.paused, knobs.dirty_memory_mb) == (50, True, 16)
    for bad, message in (({"paused": "yes"}, "true or false"),
                         ({"downtime_limit_ms": -1}, "integer >= 0"),
                         ({"downtime_limit_ms": 1.5}, "integer >= 0"),
                         ({"max_bandwidth_mib": 0}, "at least 1"),
                         ({"turbo": 1}, "unknown setting turbo"),
                         ([1], "a mapping")):
        with pytest.raises(KnobError, match=message):
            VmKnobs.parse(bad)


def test_profiles_carry_vm_knobs():
    assert Profile.load("healthy").vm == VmKnobs()
    paused = Profile.load("vm-paused").vm
    assert paused.paused and paused.max_bandwidth_mib == 32
    dirty = Profile.load("vm-dirty").vm
    assert dirty.auto_converge and dirty.dirty_memory_mb > 0
    base = {"outcomes": [{"weight": 1}]}
    with pytest.raises(ProfileError, match="vm.paused"):
        Profile.from_dict({**base, "vm": {"paused": 1}})
    # drop needs a namespace per host: a profile for VM guests may use it
    drop = {"outcomes": [{"kinds": {"drop": 1, "refused": 1}, "outage_seconds": 1}]}
    with pytest.raises(ProfileError, match="its VM guests can"):
        Profile.from_dict(drop)
    assert Profile.from_dict({**drop, "vm": {}}).netns_kinds() == [FaultKind.DROP]
    assert Profile.load("healthy").netns_kinds() == []


IDENTITY = InstanceIdentity(
    uuid="11111111-2222-3333-4444-555555555555", name="vm", hostname="vm.novalocal",
    project_id="p", launch_index=0, availability_zone="nova",
    public_keys={"k": "ssh-rsa AAAA"}, fixed_ips=("10.0.0.5",), floating_ips=(),
    ec2_id="i-00000001")
DECOY = InstanceIdentity(**{**IDENTITY.__dict__, "uuid": "ghost", "hostname": "ghost"})


def view(kind: FaultKind | None, host: str = "compute-2") -> MetadataView:
    outage = None
    if kind is not None:
        outage = Outage("s", "m", host, kind, 0.0, 1.0, decoy=DECOY)
    return MetadataView(host, outage, IDENTITY)


def test_metadata_answers_of_a_host():
    json_path = "/openstack/latest/meta_data.json"
    ok = answer(view(None), "compute-2", json_path)
    assert ok.action == "reply" and ok.status == 200 and IDENTITY.uuid in ok.body
    assert answer(view(None), "compute-2", "/latest/meta-data/hostname").body == "vm.novalocal"
    assert answer(None, "compute-2", json_path).action == "drop"
    elsewhere = answer(view(None, host="compute-1"), "compute-2", json_path)
    assert (elsewhere.action, elsewhere.status) == ("reply", 404)
    assert answer(view(FaultKind.REFUSED), "compute-2", json_path).action == "drop"
    assert answer(view(FaultKind.DROP), "compute-2", json_path).action == "drop"
    assert answer(view(FaultKind.HANG), "compute-2", json_path).action == "hang"
    assert answer(view(FaultKind.HTTP_503), "compute-2", json_path).status == 503
    wrong = answer(view(FaultKind.WRONG_INSTANCE), "compute-2", json_path)
    assert wrong.status == 200 and IDENTITY.uuid not in wrong.body and "ghost" in wrong.body


def test_names_of_namespaces_and_devices():
    net = network.HostNetwork(["compute-1", "compute-2"], "172.24.4.0/24", serial=12)
    assert net.namespace("compute-2").startswith(network.NS_PREFIX)
    assert network._NS.match(net.namespace("compute-1"))
    link = net.root_link("compute-2")
    assert network._LINK.match(link) and len(link) <= 15
    # the longest pid Linux hands out still fits an interface name
    assert len(f"vm{4194304}.{99}h{9}") <= 15
    assert net.addressing.gateway == "172.24.4.1"


def test_config_of_vm_guests():
    vm = DevCloudConfig(state_dir=image.Path("/tmp/x"), guests="vm")
    assert vm.floating_cidr == VM_FLOATING_CIDR and vm.guest_ssh_port == 22
    process = DevCloudConfig(state_dir=image.Path("/tmp/x"))
    assert process.floating_cidr == PROCESS_FLOATING_CIDR and process.guest_ssh_port == 2222
    with pytest.raises(ValueError, match="outside 127.0.0.0/8"):
        DevCloudConfig(state_dir=image.Path("/tmp/x"), guests="vm",
                       floating_cidr="127.0.9.0/24")
    with pytest.raises(ValueError, match="guests: one of"):
        DevCloudConfig(state_dir=image.Path("/tmp/x"), guests="lxc")


def test_what_a_vm_guest_can_observe_of_an_outage():
    vm = {"outage_start": 10.0, "outage_end": 11.0, "pause_start": 9.95,
          "pause_end": 10.05, "qemu": {"downtime_ms": 100}}
    # the guest's clock stops in the pause: it sees the outage after resuming
    assert accuracy.observable_outage(vm) == pytest.approx((0.95, 0.95))
    process = {k: v for k, v in vm.items() if k != "qemu"}
    # a process guest's clock runs on: the frozen time before it is ambiguous
    assert accuracy.observable_outage(process) == pytest.approx((1.0, 1.05))
    row = accuracy.MigrationAccuracy("s", 1, measured=1.1, error_bound=0.2,
                                     true_shortest=0.95, true_longest=0.95,
                                     pause_estimate=0.13, qemu_downtime=0.1,
                                     stopped=0.12)
    assert row.downtime_error == pytest.approx(0.15)
    assert row.pause_error == pytest.approx(0.01)
    assert row.pause_error_vs_downtime == pytest.approx(0.03)
    assert accuracy.summary([1.0, None, 3.0]) == (2.0, 3.0)
    assert accuracy.summary([None]) is None


def _main_command():
    return load_tool("devcloud_task")


def test_the_main_command_passes_vm_guests_on():
    main = _main_command()
    vm = main._parse_args(["--guests", "vm", "--task-args", '{"times": 1}'])
    assert "--guests=vm" in main.devcloud_options(vm)
    arguments = main.task_arguments(vm)
    assert arguments[:2] == ["--task-args-file", vm.task_args_file]
    # the VM guests' SSH port, under the user's own arguments
    assert json.loads(arguments[3]) == {"ssh_port": 22, "times": 1}
    process = main._parse_args(["--task-args", '{"times": 1}'])
    assert "--guests=vm" not in main.devcloud_options(process)
    assert main.task_arguments(process)[2:] == ["--task-args", '{"times": 1}']
    assert main.task_arguments(main._parse_args([]))[2:] == []


def test_the_main_command_sizes_the_guests_from_the_task_as_rendered():
    main = _main_command()
    # concurrency from --task-args, probe rates from the template's defaults
    budget = main.guest_cpu_budget(main._parse_args(
        ["--task-args", '{"times": 50, "concurrency": 50}']))
    assert budget.guests == 50
    assert budget.migrating_cores == pytest.approx(4 * budget.steady_cores)  # 0.05 vs 0.2
    assert not budget.fits
    slow = main.guest_cpu_budget(main._parse_args(
        ["--task-args", '{"concurrency": 50, "probe_interval": 1.0, '
                        '"fast_probe_interval": 1.0}']))
    assert slow.migrating_cores == slow.steady_cores and slow.fits
    assert main.guest_cpu_budget(main._parse_args(["--task", "/nonexistent.yaml"])) is None
    # the static busybox's probes cost less: 50 guests at 1 s probes need less
    options = main._parse_args(["--task-args", '{"concurrency": 50, "probe_interval": 1.0, '
                                               '"fast_probe_interval": 1.0}'])
    options.busybox = "/cache/busybox-static/bin/busybox"
    static = main.guest_cpu_budget(options)
    assert static.migrating_cores < slow.migrating_cores * 0.6


def test_the_main_command_gives_process_guests_the_static_busybox(monkeypatch, tmp_path):
    main = _main_command()
    fetched = tmp_path / "busybox"
    fetched.write_text("#!/bin/sh\n")
    fetched.chmod(0o755)
    runs = []

    def fetch(argv, **kwargs):
        runs.append(argv)
        return subprocess.CompletedProcess(argv, 0, f"{fetched}\n", "")
    monkeypatch.setattr(main.subprocess, "run", fetch)
    process = main._parse_args([])
    process.busybox = main.guest_busybox(process)
    assert runs[0][0].endswith("tools/fetch-busybox-static")
    assert main.devcloud_options(process)[-2:] == ("--busybox", str(fetched))
    # asked for the busybox on PATH, or VM guests: nothing fetched
    for argv in (["--guest-busybox", "system"], ["--guests", "vm"]):
        assert main.guest_busybox(main._parse_args(argv)) is None
    assert len(runs) == 1


def test_the_main_command_falls_back_to_the_busybox_on_path_and_says_so(monkeypatch,
                                                                       capsys):
    main = _main_command()
    monkeypatch.setattr(main.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, "", "fetch-busybox-static: needs apt-get and dpkg (Debian or Ubuntu)"))
    process = main._parse_args([])
    process.busybox = main.guest_busybox(process)
    assert process.busybox is None
    assert "--busybox" not in main.devcloud_options(process)
    err = capsys.readouterr().err
    assert "needs apt-get" in err and "busybox on PATH" in err


def test_the_main_command_warns_when_the_metadata_service_stalled(tmp_path):
    main = _main_command()
    assert main.stalls_warning(tmp_path) is None          # no file: none
    (tmp_path / "metadata-stalls.jsonl").write_text(
        '{"start": 1.0, "seconds": 0.6}\n{"start": 9.0, "seconds": 2.3}\n')
    warning = main.stalls_warning(tmp_path)
    assert warning.startswith("WARNING: the devcloud's metadata service stalled 2 time(s)")
    assert "longest 2.3 s, 2.9 s in all" in warning
    assert "not the cloud model" in warning
