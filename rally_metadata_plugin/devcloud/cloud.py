"""The devcloud assembled: model (:mod:`.model`), APIs (:mod:`.api`), guests,
SSH, metadata service, migration engine and timer thread.

:class:`DevCloud` is what tests use in-process and what the ``serve``
command runs. It writes into its state directory:

* ``env.json``: a spec for ``rally env create --spec`` (existing users);
* ``rally.conf``: short poll intervals and a sqlite DB inside the state dir;
* ``truth.jsonl``: ground truth, one line per finished migration;
* ``metadata-stalls.jsonl``: one line per time the metadata service answered
  nothing for half a second or more (this machine overloaded): when it
  started (``CLOCK_BOOTTIME``) and how long;
* ``requests.log``: one line per API request;
* ``guests/<server uuid>/``: each guest's home directory;
* ``ready``: written last, a JSON object with the URLs (removed on stop);
* ``leftovers.json``: written on stop: resources users created and did not
  delete, and guest processes that outlived their server or the stop (with
  VM guests: QEMU processes, namespaces and devices still there after it);
* with VM guests (``guests="vm"``, :mod:`.vm`): ``vms/<server uuid>/``
  (QEMU's consoles, logs and QMP sockets) and ``vm-boots.jsonl`` (each
  guest's boot time).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rally_metadata_plugin.devcloud import keys, lifetime, serving
from rally_metadata_plugin.devcloud.api import conformance, urls
from rally_metadata_plugin.devcloud.api.app import ApiApp, ApiServer
from rally_metadata_plugin.devcloud.api.base import RequestLog
from rally_metadata_plugin.devcloud.config import (VM_FLOATING_CIDR,
                                                   DevCloudConfig, UserSpec)
from rally_metadata_plugin.devcloud.guests import GuestManager
from rally_metadata_plugin.devcloud.metadata import STALL_LOG, MetadataService
from rally_metadata_plugin.devcloud.migration_engine import MigrationEngine, TruthLog
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.network_loss import NetworkLoss
from rally_metadata_plugin.devcloud.ssh import SshGateway
from rally_metadata_plugin.devcloud.timers import TimerThread

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.vm.backend import VmBackend

LOG = logging.getLogger(__name__)

#: rally [openstack] options that make a run against the devcloud fast
RALLY_OPENSTACK_OPTIONS = {
    "nova_server_boot_prepoll_delay": 0.1,
    "nova_server_boot_poll_interval": 0.2,
    "nova_server_boot_timeout": 60,
    "nova_server_delete_prepoll_delay": 0.1,
    "nova_server_delete_poll_interval": 0.2,
    "nova_server_delete_timeout": 60,
    "nova_server_live_migrate_prepoll_delay": 0.1,
    "nova_server_live_migrate_poll_interval": 0.2,
    "nova_server_live_migrate_timeout": 180,
    "vm_ping_poll_interval": 0.2,
    "vm_ping_timeout": 30,
    "resource_deletion_timeout": 30,
}


def _credentials(user: UserSpec) -> dict[str, str]:
    return {"username": user.name, "password": user.password,
            "project_name": user.project, "user_domain_name": "Default",
            "project_domain_name": "Default"}


class DevCloud:
    """A local simulated OpenStack (context manager: start/stop).

    Example::

        with DevCloud(DevCloudConfig(state_dir=tmp, profile="healthy")) as dc:
            session = ...  # keystoneauth1 on dc.auth_url
            dc.truth()     # ground truth of finished and running migrations
    """

    def __init__(self, config: DevCloudConfig) -> None:
        self.config = config
        self.profile = config.load_profile()
        self.backend: CloudBackend | None = None
        self.guests: GuestManager | None = None
        self.metadata: MetadataService | None = None
        self.ssh: SshGateway | None = None
        self.engine: MigrationEngine | None = None
        self._truth: TruthLog | None = None
        self._timers: TimerThread | None = None
        self._api: ApiServer | None = None
        self._request_log: RequestLog | None = None
        self.vm: "VmBackend | None" = None

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> "DevCloud":
        state = self.state_dir
        state.mkdir(parents=True, exist_ok=True)
        serving.raise_open_file_limit()
        (state / "ready").unlink(missing_ok=True)
        self._timers = TimerThread()
        self._timers.start()
        try:
            self._assemble(state)
        except BaseException:
            self.stop()
            raise
        self._write_state_files()
        LOG.info("devcloud ready at %s (profile %s, seed %s)", self.base_url,
                 self.profile.name, self.config.seed)
        return self

    def _assemble(self, state: Path) -> None:
        config = self.config
        if config.guests == "vm" and config.floating_cidr == VM_FLOATING_CIDR:
            # the default one may be another devcloud's: then take a free one
            from rally_metadata_plugin.devcloud.vm.network import free_floating_cidr
            config.floating_cidr = free_floating_cidr(config.floating_cidr)
        self.backend = CloudBackend(config, self._timers,
                                    random.Random(config.seed))
        self._truth = TruthLog(state / "truth.jsonl")
        if config.guests == "vm":
            self._assemble_vm_guests(state)
        else:
            self._assemble_process_guests(state)
        self._request_log = RequestLog(state / "requests.log")
        app = ApiApp(self.backend, self._request_log,
                     {"truth": self._truth, "profile": self.profile.name})
        self._api = ApiServer(app, config.port, self._conformance(state),
                              config.api_connection_limit)

    def _assemble_vm_guests(self, state: Path) -> None:
        """QEMU guests: their hypervisor migrates for real (checked and
        prepared before anything serves: a missing tool is an error now)."""
        from rally_metadata_plugin.devcloud.vm.backend import VmBackend
        self.vm = VmBackend(self.config, self.backend, self._timers, state,
                            self.profile)
        guests = self.vm.start()
        self.engine = MigrationEngine(self.backend, self.profile,
                                      self.config.seed, guests, self._truth,
                                      hypervisor=guests)
        self.backend.migrations.migrator = self.engine
        self.backend.listeners = [guests]

    def _assemble_process_guests(self, state: Path) -> None:
        config = self.config
        netns_kinds = self.profile.netns_kinds()
        if netns_kinds:
            raise ValueError(
                f"profile {self.profile.name}: the process guests cannot "
                f"inject {', '.join(map(str, netns_kinds))} (it needs a "
                f"network namespace per host): run the VM guests (--guests vm)")
        self.metadata = MetadataService(self.backend, config.hang_limit,
                                        config.metadata_connection_limit,
                                        state / STALL_LOG)
        self.guests = GuestManager(self.backend, state / "guests",
                                   self.metadata.url, config.ssh_user,
                                   config.busybox)
        self.ssh = SshGateway(self.backend, self.guests,
                              keys.generate_host_key(), config.ssh_port,
                              config.ssh_user, config.ssh_connection_limit,
                              config.ssh_command_limit)
        self.engine = MigrationEngine(self.backend, self.profile, config.seed,
                                      self.guests, self._truth,
                                      effects=(self.guests, self.ssh,
                                               NetworkLoss(self.ssh)))
        self.backend.migrations.migrator = self.engine
        # metadata first: a guest's environment needs its endpoint's URL
        self.backend.listeners = [self.metadata, self.guests, self.ssh]

    def _conformance(self, state: Path):
        """The WSGI wrapper checking Nova's responses against tempest's
        schemas, when a conformance log is configured (or in $RMP_DEVCLOUD_CONFORMANCE)."""
        path = conformance.log_path(self.config.conformance_log)
        if path is None:
            return None
        return conformance.middleware(path, label=str(state),
                                      served=conformance.served_by(
                                          urls.url_map()))

    def stop(self) -> None:
        """Stop serving and kill every guest process. Idempotent."""
        (self.state_dir / "ready").unlink(missing_ok=True)
        if self._api is not None:
            self._api.stop()
            self._api = None
        if self.backend is not None:
            # nothing may reopen a listener or respawn a guest from now on
            self.backend.listeners = []
        if self.engine is not None:
            self.engine.stop(timeout=2)
        if self.ssh is not None:
            self.ssh.stop()
        leftovers = self._leftovers()
        if self.guests is not None:
            self.guests.kill_all()
        if self.vm is not None:
            self.vm.stop()
        if leftovers is not None:
            leftovers["processes_after_stop"] = self._own_processes()
            if self.vm is not None:
                leftovers["vm_after_stop"] = self.vm.leftovers()
            (self.state_dir / "leftovers.json").write_text(json.dumps(leftovers, indent=2))
        # recorded above, and killed all the same: guests of deleted servers,
        # processes forked while their guest was being killed
        lifetime.kill_guest_processes(self.state_dir / "guests")
        if self.guests is not None:
            self.guests.remove_cpu_group()
        if self.metadata is not None:
            self.metadata.stop()
        if self._timers is not None:
            self._timers.stop()
            self._timers = None
        if self._request_log is not None:
            self._request_log.close()
            self._request_log = None

    def _own_processes(self) -> dict[str, list[int]]:
        """Live processes of this devcloud's guests (alive or deleted)."""
        return lifetime.guest_processes(self.state_dir / "guests")

    def _leftovers(self) -> dict | None:
        """What the users left behind: API resources and processes of deleted servers.

        Written to ``leftovers.json`` on stop, so a test or a user can check
        that a task cleaned up after itself.
        """
        if self.backend is None:
            return None
        resources = self.backend.leftovers()
        orphans = {sid: pids for sid, pids in self._own_processes().items()
                   if sid not in resources["servers"]}
        if self.vm is not None:
            orphans.update({sid: pids for sid, pids in self.vm.processes().items()
                            if sid not in resources["servers"]})
        return {"resources": resources, "processes_of_deleted_servers": orphans}

    def __enter__(self) -> "DevCloud":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # -- what callers need --------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def base_url(self) -> str:
        if self._api is None:
            raise RuntimeError("the devcloud is not running")
        return self._api.base_url

    @property
    def auth_url(self) -> str:
        return f"{self.base_url}/identity"

    @property
    def admin(self) -> UserSpec:
        return next(u for u in self.config.users if u.admin)

    @property
    def users(self) -> list[UserSpec]:
        return [u for u in self.config.users if not u.admin]

    @property
    def env_spec(self) -> dict:
        """The ``rally env create --spec`` document (existing users)."""
        return {"openstack": {
            "auth_url": self.auth_url,
            "region_name": self.config.region,
            "https_insecure": False,
            "admin": _credentials(self.admin),
            "users": [_credentials(u) for u in self.users],
            "api_info": {"nova": {"version": self.config.nova_version}},
        }}

    @property
    def env_spec_path(self) -> Path:
        return self.state_dir / "env.json"

    @property
    def rally_conf_path(self) -> Path:
        return self.state_dir / "rally.conf"

    @property
    def truth_path(self) -> Path:
        return self.state_dir / "truth.jsonl"

    def truth(self) -> list[dict]:
        """Ground truth: finished migrations, then running ones."""
        return self._truth.records() if self._truth else []

    def ready_info(self) -> dict:
        return {"auth_url": self.auth_url, "base_url": self.base_url,
                "truth_url": f"{self.base_url}/devcloud/truth",
                "state_dir": str(self.state_dir),
                "env_spec": str(self.env_spec_path),
                "rally_conf": str(self.rally_conf_path),
                "truth": str(self.truth_path),
                "requests_log": str(self.state_dir / "requests.log"),
                "profile": self.profile.name, "seed": self.config.seed,
                "ssh_port": self.config.guest_ssh_port,
                "guests": self.config.guests,
                "ssh_user": self.config.ssh_user, "pid": os.getpid()}

    def _write_state_files(self) -> None:
        state = self.state_dir
        self.env_spec_path.write_text(json.dumps(self.env_spec, indent=2)
                                      + "\n")
        lines = ["# written by rally-metadata-devcloud",
                 "[DEFAULT]", "",
                 "[database]",
                 f"connection = sqlite:///{(state / 'rally.sqlite').resolve()}",
                 "", "[openstack]"]
        lines += [f"{k} = {v}" for k, v in RALLY_OPENSTACK_OPTIONS.items()]
        self.rally_conf_path.write_text("\n".join(lines) + "\n")
        # written last and atomically: its presence means "ready"
        tmp = state / "ready.tmp"
        tmp.write_text(json.dumps(self.ready_info()) + "\n")
        tmp.rename(state / "ready")
