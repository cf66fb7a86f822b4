"""Configuration of one devcloud instance."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from rally_metadata_plugin.devcloud import limits
from rally_metadata_plugin.devcloud.profiles import Profile


GUEST_BACKENDS = ("process", "vm")
PROCESS_FLOATING_CIDR = "127.0.1.0/24"
#: devstack's public range: routed to the VM guests' host namespaces
VM_FLOATING_CIDR = "172.24.4.0/24"


@dataclasses.dataclass(frozen=True)
class UserSpec:
    """An existing keystone user, alone in its own project."""

    name: str
    password: str
    project: str
    admin: bool = False


def default_users(count: int = 1) -> tuple[UserSpec, ...]:
    """``admin`` plus ``count`` users: demo, demo2, demo3..."""
    names = ["demo"] + [f"demo{i}" for i in range(2, count + 1)]
    return (UserSpec("admin", "admin-secret", "admin", admin=True),
            *(UserSpec(n, f"{n}-secret", n) for n in names))


@dataclasses.dataclass
class DevCloudConfig:
    """Knobs of a devcloud; every field has a default that suits tests.

    :param state_dir: where env.json, rally.conf, truth.jsonl, requests.log,
        the guests' home directories and the ``ready`` file are written.
    :param profile: the live-migration fault profile (name, path or object).
    :param seed: seed of every random draw of the migration model.
    :param port: API port on 127.0.0.1 (0: any free port).
    :param hypervisors: number of compute hosts (at least 2 to migrate).
    :param ssh_port: port each guest's SSH server binds on its floating IP.
    :param ssh_user: the only user name guests accept.
    :param floating_cidr: loopback range the ``public`` network hands out
        floating IPs from; guests' SSH servers bind to these addresses.
    :param boot_seconds: BUILD -> ACTIVE delay.
    :param nova_version: microversion written into env.json's api_info.
    :param region: keystone region of every catalog endpoint.
    :param users: the existing users (one admin, one or more users).
    :param hang_limit: how long a ``hang`` outage holds a request at most.
    :param local_disks: instances live on the compute hosts' local disks (no
        shared storage): nova refuses a non-block live migration, as its
        libvirt driver does, and ``block_migration: "auto"`` means block.
    :param disabled_hosts: compute hosts whose nova-compute service starts
        disabled (the scheduler skips them; ``PUT /os-services`` changes it).
    :param down_hosts: compute hosts whose nova-compute service is down (it
        stopped reporting): no server is placed or migrated there.
    :param conformance_log: check every Nova response against tempest's
        schemas and append the verdicts to this JSON-lines file (needs the
        ``test`` extra); $RMP_DEVCLOUD_CONFORMANCE when None.
    :param busybox: the busybox binary whose ``sh`` the guests run (None:
        ``busybox`` on PATH; /bin/sh when there is none).
    :param api_connection_limit: open API connections before the API stops
        accepting (clients then wait in the backlog).
    :param metadata_connection_limit: open metadata connections, all guests
        together, past which a new one is answered 503.
    :param ssh_connection_limit: open SSH connections, all guests together,
        before the gateway stops accepting (clients then wait).
    :param ssh_command_limit: commands running at once over SSH, all guests
        together; an exec request past it waits, then is refused.
    :param guests: ``process`` (host processes, no root needed) or ``vm``
        (QEMU virtual machines with real live migration, see
        :mod:`.vm`; needs root). VM guests serve SSH on port 22 of a
        floating IP outside 127/8 (:data:`VM_FLOATING_CIDR` unless given).
    :param vm_accel: ``auto`` (KVM where a KVM guest boots, else TCG),
        ``tcg`` or ``kvm``.
    :param vm_memory_mb: each VM's memory.
    :param vm_boot_timeout: seconds a VM guest gets to boot (the preflight's
        test guest too).
    """

    state_dir: Path
    profile: str | Path | Profile = "healthy"
    seed: int = 0
    port: int = 0
    hypervisors: int = 2
    ssh_port: int = 2222
    ssh_user: str = "cirros"
    floating_cidr: str = PROCESS_FLOATING_CIDR
    boot_seconds: float = 0.3
    nova_version: str = "2.79"
    region: str = "RegionOne"
    users: tuple[UserSpec, ...] = dataclasses.field(
        default_factory=default_users)
    hang_limit: float = 30.0
    local_disks: bool = False
    disabled_hosts: tuple[str, ...] = ()
    down_hosts: tuple[str, ...] = ()
    conformance_log: Path | None = None
    busybox: str | None = None
    api_connection_limit: int = limits.API_CONNECTIONS
    metadata_connection_limit: int = limits.METADATA_CONNECTIONS
    ssh_connection_limit: int = limits.SSH_CONNECTIONS
    ssh_command_limit: int = limits.SSH_COMMANDS
    guests: str = "process"
    vm_accel: str = "auto"
    vm_memory_mb: int = 192
    vm_boot_timeout: float = 30.0

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if self.hypervisors < 1:
            raise ValueError("hypervisors must be >= 1")
        for field in ("api_connection_limit", "metadata_connection_limit",
                      "ssh_connection_limit", "ssh_command_limit"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1")
        if self.guests not in GUEST_BACKENDS:
            raise ValueError(f"guests: one of {', '.join(GUEST_BACKENDS)}, "
                             f"got {self.guests!r}")
        if self.guests == "vm" and self.floating_cidr == PROCESS_FLOATING_CIDR:
            self.floating_cidr = VM_FLOATING_CIDR
        network = ipaddress.ip_network(self.floating_cidr)
        if self.guests == "process" and not network.is_loopback:
            # guests bind real sockets on their floating IPs
            raise ValueError("floating_cidr must be inside 127.0.0.0/8")
        if self.guests == "vm" and network.is_loopback:
            # VM guests are reached through routes to their hosts
            raise ValueError("floating_cidr must be outside 127.0.0.0/8 "
                             "with VM guests")
        if sum(1 for u in self.users if u.admin) != 1:
            raise ValueError("exactly one admin user is required")
        if not any(not u.admin for u in self.users):
            raise ValueError("at least one non-admin user is required")
        self.disabled_hosts = tuple(self.disabled_hosts)
        self.down_hosts = tuple(self.down_hosts)
        hosts = set(self.host_names)
        for field in ("disabled_hosts", "down_hosts"):
            unknown = sorted(set(getattr(self, field)) - hosts)
            if unknown:
                raise ValueError(f"{field}: no such compute host "
                                 f"{', '.join(unknown)} (hosts are "
                                 f"compute-1 .. compute-{self.hypervisors})")

    @property
    def guest_ssh_port(self) -> int:
        """The port the guests' SSH servers listen on."""
        return 22 if self.guests == "vm" else self.ssh_port

    @property
    def host_names(self) -> list[str]:
        """``compute-1`` .. ``compute-<hypervisors>``."""
        return [f"compute-{i}" for i in range(1, self.hypervisors + 1)]

    def load_profile(self) -> Profile:
        if isinstance(self.profile, Profile):
            return self.profile
        return Profile.load(self.profile)
