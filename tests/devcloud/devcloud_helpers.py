"""Helpers of the devcloud tests: configs, real clients, booting guests."""

from __future__ import annotations

import io
import itertools
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko
from glanceclient import client as glance_client
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from neutronclient.v2_0 import client as neutron_client
from novaclient import client as nova_client

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud.cloud import DevCloud
from rally_metadata_plugin.devcloud.config import DevCloudConfig, UserSpec
from rally_metadata_plugin.devcloud.profiles import Profile

warnings.filterwarnings("ignore", message=".*neutronclient is deprecated.*")

USERS = (UserSpec("admin", "admin-pw", "admin", admin=True),
         UserSpec("alice", "alice-pw", "alice"),
         UserSpec("bob", "bob-pw", "bob"))

# every devcloud of the session gets its own floating range, so a guest's
# SSH listener can never collide with one of an earlier devcloud
_ranges = itertools.count(20)


def quick_profile(kind: FaultKind | None = FaultKind.REFUSED, *, outage=(1.5, 1.5),
                  pause=(0.05, 0.05), precopy=(0.2, 0.2),
                  error: str | None = None,
                  precheck_error: str | None = None,
                  outcome_fields: dict | None = None, **fields) -> Profile:
    """A profile with one deterministic outcome, for tests; ``fields`` are
    further profile fields (``precheck_seconds``...), ``outcome_fields``
    further fields of the outcome (``guest_reboot``...)."""
    outcome: dict = {"weight": 1, **(outcome_fields or {})}
    if error:
        outcome["error"] = {"message": error, "code": 500}
    elif precheck_error:
        outcome["precheck_error"] = {"message": precheck_error,
                                     "exception": "NoValidHost"}
    elif kind:
        outcome.update(kinds={kind: 1}, outage_seconds=(
            list(outage) if outage is not None else None))
    return Profile.from_dict({"name": f"test-{kind or error}",
                              "precopy_seconds": list(precopy),
                              "pause_seconds": list(pause),
                              "outcomes": [outcome], **fields})


def make_config(tmp: Path, **overrides) -> DevCloudConfig:
    values = dict(state_dir=tmp, users=USERS, boot_seconds=0.2, seed=7,
                  floating_cidr=f"127.0.{next(_ranges)}.0/24")
    values.update(overrides)
    return DevCloudConfig(**values)


@dataclass
class Clients:
    """Real clients of one user of a devcloud."""

    cloud: DevCloud
    user: UserSpec

    @property
    def session(self) -> ks_session.Session:
        return ks_session.Session(auth=v3.Password(
            auth_url=self.cloud.auth_url, username=self.user.name,
            password=self.user.password, project_name=self.user.project,
            user_domain_name="Default", project_domain_name="Default"))

    def nova(self, version: str = "2.79"):
        return nova_client.Client(version, session=self.session)

    def neutron(self):
        return neutron_client.Client(session=self.session)

    def glance(self):
        return glance_client.Client("2", session=self.session)

    @property
    def project_id(self) -> str:
        return self.session.get_project_id()


def clients(cloud: DevCloud, name: str) -> Clients:
    return Clients(cloud, next(u for u in cloud.config.users
                               if u.name == name))


def raw_request(c: Clients, method: str, path: str,
                version: str | None = None, **kwargs):
    """A compute request through the user's keystoneauth session (no
    raise)."""
    headers = kwargs.pop("headers", {})
    if version:
        headers["OpenStack-API-Version"] = f"compute {version}"
    return c.session.request(
        path, method, endpoint_filter={"service_type": "compute"},
        headers=headers, raise_exc=False, **kwargs)


@dataclass
class Guest:
    """A booted, reachable server."""

    server_id: str
    address: str
    private_key: str
    cloud: DevCloud

    def ssh(self, key: str | None = None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(self.address, port=self.cloud.config.guest_ssh_port,
                       username=self.cloud.config.ssh_user,
                       pkey=paramiko.RSAKey.from_private_key(
                           io.StringIO(key or self.private_key)),
                       timeout=5, look_for_keys=False, allow_agent=False)
        return client

    def run(self, command: str, stdin: str | None = None,
            timeout: float = 20) -> tuple[int, str, str]:
        with self.ssh() as client:
            return run(client, command, stdin, timeout)


def run(client: paramiko.SSHClient, command: str, stdin: str | None = None,
        timeout: float = 20) -> tuple[int, str, str]:
    channel = client.get_transport().open_session()
    channel.settimeout(timeout)
    channel.exec_command(command)
    if stdin is not None:
        channel.sendall(stdin.encode())
        channel.shutdown_write()
    out = channel.makefile("rb").read().decode()
    err = channel.makefile_stderr("rb").read().decode()
    return channel.recv_exit_status(), out, err


def ensure_network(c: Clients) -> str:
    """A tenant network routed to ``public`` (what rally's network context
    builds); returns the network id."""
    neutron = c.neutron()
    for network in neutron.list_networks(name="testnet")["networks"]:
        if network["tenant_id"] == c.project_id:
            return network["id"]
    public = neutron.list_networks(**{"router:external": True})["networks"][0]
    network = neutron.create_network({"network": {"name": "testnet"}})
    net_id = network["network"]["id"]
    subnet = neutron.create_subnet({"subnet": {
        "name": "testsubnet", "network_id": net_id, "cidr": "10.2.0.0/24",
        "ip_version": 4}})["subnet"]
    router = neutron.create_router({"router": {
        "name": "testrouter",
        "external_gateway_info": {"network_id": public["id"]}}})["router"]
    neutron.add_interface_router(router["id"], {"subnet_id": subnet["id"]})
    return net_id


def wait_for(predicate: Callable[[], object], timeout: float = 15,
             interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def boot_server(cloud: DevCloud, user: str = "alice",
                name: str = "vm") -> str:
    """A server on a routed network, ACTIVE (no floating IP, no SSH wait);
    returns its id."""
    c = clients(cloud, user)
    nova = c.nova("2.79")
    net_id = ensure_network(c)
    image = next(iter(c.glance().images.list()))
    server = nova.servers.create(name, image.id, "1",
                                 nics=[{"net-id": net_id}])
    wait_for(lambda: nova.servers.get(server.id).status == "ACTIVE",
             what="ACTIVE")
    return server.id


def host_of(nova, server_id: str) -> str:
    return getattr(nova.servers.get(server_id), "OS-EXT-SRV-ATTR:host")


def boot_guest(cloud: DevCloud, user: str = "alice",
               name: str = "vm", ssh_timeout: float = 15) -> Guest:
    """Keypair + server + floating IP; returns once SSH answers (VM guests
    boot a kernel first: give them longer)."""
    c = clients(cloud, user)
    nova, neutron = c.nova("2.79"), c.neutron()
    net_id = ensure_network(c)
    key_name = f"key-{name}-{time.monotonic_ns()}"
    keypair = nova.keypairs.create(key_name)
    image = next(iter(c.glance().images.list()))
    server = nova.servers.create(name, image.id, "1", key_name=key_name,
                                 nics=[{"net-id": net_id}])
    wait_for(lambda: nova.servers.get(server.id).status == "ACTIVE",
             what="ACTIVE")
    public = neutron.list_networks(name="public")["networks"][0]
    fip = neutron.create_floatingip({"floatingip": {
        "floating_network_id": public["id"], "description": name}})
    port = neutron.list_ports(device_id=server.id)["ports"][0]
    neutron.update_floatingip(fip["floatingip"]["id"],
                              {"floatingip": {"port_id": port["id"]}})
    address = fip["floatingip"]["floating_ip_address"]
    guest = Guest(server.id, address, keypair.private_key, cloud)
    wait_for(lambda: _ssh_ok(guest), timeout=ssh_timeout, what="ssh")
    return guest


def _ssh_ok(guest: Guest) -> bool:
    try:
        return guest.run("true", timeout=5)[0] == 0
    except (OSError, paramiko.SSHException):
        return False


LOOP = "echo $$ > loop.pid\nwhile :; do echo tick >> ticks; sleep 0.05; done\n"


def start_loop(guest: Guest) -> int:
    """A detached process in the guest (as the meter is); returns its pid."""
    status, _, _ = guest.run(
        f"cat > loop.sh <<'EOF'\n{LOOP}EOF\n"
        "setsid sh loop.sh </dev/null >/dev/null 2>&1 &\necho started")
    assert status == 0
    _, out, _ = guest.run("sleep 0.3; cat loop.pid")
    return int(out.strip())


def live_migrate(cloud: DevCloud, guest: Guest) -> dict:
    """Live-migrate the guest's server; returns its completed truth record."""
    index = 1 + sum(r["server_id"] == guest.server_id for r in cloud.truth())
    admin = clients(cloud, "admin").nova("2.79")
    admin.servers.live_migrate(guest.server_id, host=None,
                               block_migration="auto")
    return wait_for(lambda: next((r for r in cloud.truth()
                                  if r["server_id"] == guest.server_id
                                  and r["migration_index"] == index
                                  and r["status"] == "completed"), None),
                    timeout=20, what="completed migration")
