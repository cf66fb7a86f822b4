"""A second real client: the ``openstack`` CLI (python-openstackclient, on
openstacksdk) drives a devcloud through a user's whole server life cycle
and an admin's live migrations.

Every step runs even when an earlier one failed (with a stand-in from the
Python clients where a later step needs its result), so one run lists every
step the devcloud gets wrong: the command, its error and the devcloud's
request log lines of that step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devcloud_helpers import clients, ensure_network, wait_for
from rally_metadata_plugin.devcloud.api import conformance

OPENSTACK = Path(sys.prefix) / "bin" / "openstack"


class Osc:
    """``openstack`` as one devcloud user, each step logged."""

    def __init__(self, cloud, user: str, home: Path) -> None:
        spec = next(u for u in cloud.config.users if u.name == user)
        self.cloud = cloud
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("OS_")}
        self.env.update(
            HOME=str(home), OS_AUTH_URL=cloud.auth_url, OS_USERNAME=spec.name,
            OS_PASSWORD=spec.password, OS_PROJECT_NAME=spec.project,
            OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
            OS_IDENTITY_API_VERSION="3", OS_REGION_NAME=cloud.config.region,
            OS_INTERFACE="public")
        self.failures: list[dict] = []

    def __call__(self, *args: str, parse: bool = True, check=None):
        """Run one command; returns its parsed JSON output (or stdout), or
        None when it failed or ``check`` refused its output."""
        log = self.cloud.state_dir / "requests.log"
        start = log.stat().st_size
        command = [str(OPENSTACK), *args]
        if parse:
            command += ["-f", "json"]
        result = subprocess.run(command, env=self.env, capture_output=True,
                                text=True, timeout=120)
        output = result.stdout
        problem = None
        if result.returncode != 0:
            problem = result.stderr.strip().splitlines()[-3:]
        else:
            if parse:
                try:
                    output = json.loads(result.stdout) if \
                        result.stdout.strip() else None
                except ValueError:
                    problem = [f"not JSON: {result.stdout[:300]}"]
            if problem is None and check is not None:
                try:
                    check(output)
                except AssertionError as e:
                    problem = [f"unexpected output: {e}",
                               json.dumps(output)[:600]]
        if problem is None:
            return output
        with log.open() as f:
            f.seek(start)
            requests = [" ".join(line.split()[2:]) for line in f]
        self.failures.append({"command": "openstack " + " ".join(args),
                              "rc": result.returncode, "error": problem,
                              "requests": requests})
        return None


def _expect(condition: bool, message: str) -> None:
    assert condition, message


def _host(server: dict) -> str | None:
    return server.get("OS-EXT-SRV-ATTR:host") or server.get("host")


def _settled(server) -> bool:
    return (server.status == "ACTIVE"
            and getattr(server, "OS-EXT-STS:task_state") is None)


def _osc_nova_records(log: Path, cloud) -> list[dict]:
    return [r for r in conformance.load(log)
            if r["devcloud"] == str(cloud.state_dir)
            and r["user_agent"].startswith("openstacksdk")]


@pytest.mark.skipif(not OPENSTACK.exists(), reason="python-openstackclient "
                    "is not installed (the test extra)")
def test_openstack_cli_drives_a_server_life_cycle_and_live_migrations(
        devcloud_factory, tmp_path, nova_conformance_log):
    cloud = devcloud_factory()
    user = Osc(cloud, "alice", tmp_path / "alice")
    admin = Osc(cloud, "admin", tmp_path / "admin")
    admin.failures = user.failures          # one list, in step order
    py = clients(cloud, "alice")
    nova_admin = clients(cloud, "admin").nova()

    # the tenant network, as rally's network context builds it
    network = user("network", "create", "osc-net")
    subnet = user("subnet", "create", "--network", "osc-net",
                  "--subnet-range", "10.9.0.0/24", "osc-subnet")
    router = user("router", "create", "osc-router")
    user("router", "set", "--external-gateway", "public", "osc-router",
         parse=False)
    user("router", "add", "subnet", "osc-router", "osc-subnet", parse=False)
    net_id = network["id"] if network else ensure_network(py)

    key = tmp_path / "key.pem"
    private = user("keypair", "create", "osc-key", parse=False,
                   check=lambda out: _expect("PRIVATE KEY" in out, "no key"))
    if private:
        key.write_text(private)
    images = user("image", "list", check=lambda out: _expect(
        any(i["Name"] == "cirros" for i in out), "no cirros image"))
    image = images[0]["ID"] if images else next(
        iter(py.glance().images.list())).id
    flavors = user("flavor", "list")
    flavor = "m1.tiny" if flavors else "1"

    server = user("server", "create", "--image", image, "--flavor", flavor,
                  "--network", net_id, "--key-name", "osc-key", "--wait",
                  "osc-vm", check=lambda out: _expect(
                      out["status"] == "ACTIVE", f"status {out['status']}"))
    if server is None:                 # a stand-in for the later steps
        created = py.nova().servers.create("osc-vm", image, "1",
                                           nics=[{"net-id": net_id}])
        wait_for(lambda: py.nova().servers.get(created.id).status ==
                 "ACTIVE", what="ACTIVE")
        server = {"id": created.id}
    server_id = server["id"]
    user("server", "show", server_id, check=lambda out: _expect(
        out["status"] == "ACTIVE" and "osc-net" in json.dumps(
            out["addresses"]), f"{out['status']} {out['addresses']}"))
    user("server", "list", check=lambda out: _expect(
        [s["ID"] for s in out] == [server_id], "not listed"))

    fip = user("floating", "ip", "create", "public", check=lambda out:
               _expect(out["floating_ip_address"].startswith("127."),
                       "not a loopback floating IP"))
    ports = user("port", "list", "--server", server_id,
                 check=lambda out: _expect(len(out) == 1, f"{len(out)} ports"))
    if fip and ports:
        user("floating", "ip", "set", "--port", ports[0]["ID"],
             fip["floating_ip_address"], parse=False)
        user("floating", "ip", "show", fip["floating_ip_address"],
             check=lambda out: _expect(out["port_id"] == ports[0]["ID"],
                                       f"port {out['port_id']}"))

    hypervisors = admin("hypervisor", "list", check=lambda out: _expect(
        len(out) == cloud.config.hypervisors, f"{len(out)} hypervisors"))
    names = ([h["Hypervisor Hostname"] for h in hypervisors] if hypervisors
             else [h.name for h in cloud.backend.hosts])

    def where() -> str | None:
        shown = admin("server", "show", server_id, check=lambda out: _expect(
            _host(out) in names, f"host {_host(out)}"))
        return _host(shown) if shown else None

    for version, pick_host in (("2.25", False), ("2.30", True),
                               (None, True)):
        source = where()
        target = next(n for n in names if n != source)
        args = ["server", "migrate", "--live-migration", "--wait"]
        if version:
            args = ["--os-compute-api-version", version, *args]
        if pick_host:
            args += ["--host", target]
        admin(*args, server_id, parse=False)
        wait_for(lambda: _settled(nova_admin.servers.get(server_id)),
                 timeout=60, what="the migration to finish")
        after = where()
        if after is not None and after == source:
            user.failures.append({"command": " ".join(args),
                                  "rc": 0, "error": [f"still on {source}"],
                                  "requests": []})

    if fip:
        user("floating", "ip", "delete", fip["floating_ip_address"],
             parse=False)
    user("server", "delete", "--wait", server_id, parse=False)
    user("keypair", "delete", "osc-key", parse=False)
    if router and subnet:
        user("router", "remove", "subnet", "osc-router", "osc-subnet",
             parse=False)
        user("router", "unset", "--external-gateway", "osc-router",
             parse=False)
        user("router", "delete", "osc-router", parse=False)
    if network:
        user("network", "delete", "osc-net", parse=False)

    summary = conformance.summarize(_osc_nova_records(nova_conformance_log,
                                                      cloud))
    print("Nova calls of the openstack CLI:")
    print(conformance.format_summary(summary))
    report = json.dumps(user.failures, indent=2)
    print(report)
    assert not user.failures, report
    assert summary.checked > 10


def test_openstack_cli_is_on_path_of_this_virtualenv():
    assert shutil.which("openstack", path=str(OPENSTACK.parent)), \
        "python-openstackclient belongs to the test extra"
