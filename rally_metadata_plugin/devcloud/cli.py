"""``rally-metadata-devcloud``: run the devcloud from a shell.

    rally-metadata-devcloud serve --profile healthy --seed 1 \\
        --state-dir DIR [--port 0] [--hypervisors 2] [--ssh-port 2222] \\
        [--local-disks] [--disabled-hosts compute-2] [--down-hosts ...]

Prints one JSON line with the URLs and file paths once ready (the same
object is in ``DIR/ready``), then serves until SIGTERM, SIGINT or SIGHUP, or
until the process that started it exits (``--outlive-parent`` keeps it
serving then); it kills every guest process and exits 0.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

try:
    from rally_metadata_plugin.devcloud import cgroups, lifetime, limits, profiles
    from rally_metadata_plugin.devcloud.cloud import DevCloud
    from rally_metadata_plugin.devcloud.config import (PROCESS_FLOATING_CIDR,
                                                       DevCloudConfig,
                                                       default_users)
except ImportError as missing:  # the devcloud's libraries are an extra
    sys.exit(f"rally-metadata-devcloud needs {missing.name}: "
             "pip install 'rally-metadata-plugin[devcloud]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rally-metadata-devcloud",
        description="A local simulated OpenStack whose live migrations "
                    "really disturb the guests' metadata service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run until SIGTERM/SIGINT/SIGHUP")
    serve.add_argument("--profile", default="healthy",
                       help="fault profile: a shipped name "
                            f"({', '.join(profiles.available())}) or a "
                            "YAML path")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--state-dir", type=Path, required=True)
    serve.add_argument("--port", type=int, default=0,
                       help="API port on 127.0.0.1 (0: any free port)")
    serve.add_argument("--hypervisors", type=int, default=2)
    serve.add_argument("--ssh-port", type=int, default=2222)
    serve.add_argument("--ssh-user", default="cirros")
    serve.add_argument("--users", type=int, default=1,
                       help="number of existing non-admin users, each in "
                            "its own project")
    serve.add_argument("--floating-cidr", default=None,
                       help="the public network (default 127.0.1.0/24 with "
                            "process guests, 172.24.4.0/24 with VM guests)")
    serve.add_argument("--boot-seconds", type=float, default=0.3)
    serve.add_argument("--nova-version", default="2.79",
                       help="microversion written into env.json")
    serve.add_argument("--local-disks", action="store_true",
                       help="instances on local disks (no shared storage): "
                            "nova refuses a live migration without block "
                            "migration, and \"auto\" means block")
    serve.add_argument("--disabled-hosts", type=_host_list, default=(),
                       metavar="HOST[,HOST...]",
                       help="compute hosts whose nova-compute service is "
                            "disabled")
    serve.add_argument("--down-hosts", type=_host_list, default=(),
                       metavar="HOST[,HOST...]",
                       help="compute hosts whose nova-compute service is "
                            "down")
    serve.add_argument("--conformance-log", type=Path, default=None,
                       help="check every Nova response against tempest's "
                            "schemas, one JSON line per call into this "
                            "file (default: $RMP_DEVCLOUD_CONFORMANCE)")
    serve.add_argument("--guests", choices=("process", "vm"),
                       default="process",
                       help="process: guests are host processes (no root "
                            "needed); vm: QEMU virtual machines with real "
                            "live migration (root, qemu-system-x86)")
    serve.add_argument("--vm-accel", choices=("auto", "tcg", "kvm"),
                       default="auto",
                       help="VM guests: KVM where a KVM guest boots, else "
                            "TCG (auto), or one of them")
    serve.add_argument("--busybox", default=None,
                       help="the busybox whose sh the process guests run (default: "
                            "busybox on PATH, else /bin/sh); a static build with its "
                            "applets built in (tools/fetch-busybox-static) costs about "
                            "half the CPU per probe")
    serve.add_argument("--vm-memory-mb", type=int, default=192)
    serve.add_argument("--vm-boot-timeout", type=float, default=30.0,
                       help="seconds a VM guest gets to boot")
    limits_group = serve.add_argument_group(
        "load limits", "what the servers take on at once; past it they "
        "answer slowly or with 503, never by growing without bound")
    limits_group.add_argument("--api-connection-limit", type=int,
                              default=limits.API_CONNECTIONS)
    limits_group.add_argument("--metadata-connection-limit", type=int,
                              default=limits.METADATA_CONNECTIONS)
    limits_group.add_argument("--ssh-connection-limit", type=int,
                              default=limits.SSH_CONNECTIONS)
    limits_group.add_argument("--ssh-command-limit", type=int,
                              default=limits.SSH_COMMANDS)
    serve.add_argument("--log-level", default="WARNING")
    serve.add_argument("--outlive-parent", action="store_true",
                       help="keep serving when the process that started it exits")
    sub.add_parser("profiles", help="list the shipped profiles")
    return parser


def _host_list(text: str) -> tuple[str, ...]:
    return tuple(h.strip() for h in text.split(",") if h.strip())


def serve(args: argparse.Namespace) -> int:
    config = DevCloudConfig(
        state_dir=args.state_dir, profile=args.profile, seed=args.seed,
        port=args.port, hypervisors=args.hypervisors,
        ssh_port=args.ssh_port, ssh_user=args.ssh_user,
        floating_cidr=args.floating_cidr or PROCESS_FLOATING_CIDR,
        boot_seconds=args.boot_seconds,
        nova_version=args.nova_version, users=default_users(args.users),
        local_disks=args.local_disks, disabled_hosts=args.disabled_hosts,
        down_hosts=args.down_hosts, busybox=args.busybox,
        conformance_log=args.conformance_log, guests=args.guests,
        vm_accel=args.vm_accel, vm_memory_mb=args.vm_memory_mb,
        vm_boot_timeout=args.vm_boot_timeout,
        api_connection_limit=args.api_connection_limit,
        metadata_connection_limit=args.metadata_connection_limit,
        ssh_connection_limit=args.ssh_connection_limit,
        ssh_command_limit=args.ssh_command_limit)
    stop = threading.Event()
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck
    # devcloud is waiting for
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    lifetime.handle_stop_signals(lambda *_: stop.set())
    if not args.outlive_parent:
        lifetime.stop_with_parent(stop.set)
    # This process (APIs, SSH gateway, migrations: a real cloud's control
    # plane) weighs one busy task however many of its threads run (.cgroups);
    # what it starts later is born in the group and moves to its own (the
    # metadata server, the guests' commands).
    control = (cgroups.cpu_group("the devcloud", cgroups.CONTROL_SHARES)
               if cgroups.groups_control_plane(args.guests) else None)
    if control is not None:
        control.add(os.getpid())
    try:
        cloud = DevCloud(config)
        cloud.start()
        try:
            print(json.dumps(cloud.ready_info()), flush=True)
            while not stop.wait(1.0):
                pass
        finally:
            cloud.stop()
    finally:
        if control is not None:
            control.leave(os.getpid())
            control.remove()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "profiles":
        for name in profiles.available():
            print(f"{name}: {profiles.Profile.load(name).description}")
        return 0
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return serve(args)
    except (ValueError, profiles.ProfileError, OSError, RuntimeError) as e:
        print(f"rally-metadata-devcloud: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
