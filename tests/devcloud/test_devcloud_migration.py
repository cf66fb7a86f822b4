"""Live migrations: a probe loop inside the guest sees each fault kind
exactly inside the recorded ground-truth window, and success after it."""

from __future__ import annotations

import json
import random
import time

import pytest
import requests
from rally_openstack.task.scenarios.nova.utils import _LiveMigrateReady
from rally import exceptions as rally_exc

from devcloud_helpers import boot_guest, clients, quick_profile, wait_for
from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud import profiles

PROBE = r"""echo $$ > probe.pid
while :; do
  t=$(cut -d' ' -f1 /proc/uptime)
  code=$(curl -s -g --connect-timeout 0.5 -m 1 -o body -w '%{http_code}' \
         http://169.254.169.254/openstack/latest/meta_data.json)
  rc=$?
  ok=0
  if [ "$code" = 200 ] && grep -q "$DEVCLOUD_GUEST" body; then ok=1; fi
  echo "$t $ok $rc $code" >> probes.log
  rm -f body
  sleep 0.1
done
"""

# (kind, expected curl exit codes of failed probes, expected HTTP codes)
KINDS = [
    (FaultKind.REFUSED, {7}, {"000"}),
    (FaultKind.HANG, {28}, {"000"}),
    (FaultKind.HTTP_500, {0}, {"500"}),
    (FaultKind.HTTP_503, {0}, {"503"}),
    (FaultKind.WRONG_INSTANCE, {0}, {"200"}),
]
OUTAGE = 1.5
EDGE = 0.1        # /proc/uptime has 10 ms resolution; curl needs to start


def _probes(guest) -> list[tuple[float, bool, int, str]]:
    _, out, _ = guest.run("cat probes.log")
    rows = []
    for line in out.splitlines():
        t, ok, rc, code = line.split()
        rows.append((float(t), ok == "1", int(rc), code))
    return rows


@pytest.mark.parametrize("kind,rcs,codes", KINDS)
def test_probe_sees_the_outage_inside_the_truth_window(devcloud_factory,
                                                       kind, rcs, codes):
    cloud = devcloud_factory(profile=quick_profile(kind,
                                                   outage=(OUTAGE, OUTAGE)))
    if kind == FaultKind.WRONG_INSTANCE:
        boot_guest(cloud, name="neighbour")
    guest = boot_guest(cloud, name=f"probe-{kind.replace('_', '-')}")
    status, _, _ = guest.run(
        f"cat > probe.sh <<'EOF'\n{PROBE}EOF\n"
        "setsid sh probe.sh </dev/null >/dev/null 2>&1 &")
    assert status == 0
    time.sleep(1.0)                                  # healthy baseline

    admin = clients(cloud, "admin").nova("2.79")
    source = getattr(admin.servers.get(guest.server_id),
                     "OS-EXT-SRV-ATTR:host")
    admin.servers.live_migrate(guest.server_id, host=None,
                               block_migration="auto")
    record = wait_for(lambda: next((r for r in cloud.truth()
                                    if r["status"] == "completed"), None),
                      timeout=20, what="migration")
    server = admin.servers.get(guest.server_id)
    assert server.status == "ACTIVE"
    assert getattr(server, "OS-EXT-SRV-ATTR:host") == record[
        "destination"] != source
    time.sleep(max(0.0, record["outage_end"] - time.clock_gettime(
        time.CLOCK_BOOTTIME)) + 1.6)
    guest.run("kill $(cat probe.pid)")
    probes = _probes(guest)

    assert record["kind"] == kind
    assert record["requested_at"] < record["pause_start"] \
        < record["pause_end"] <= record["completed_at"]
    assert record["outage_start"] <= record["pause_end"]
    assert record["outage_end"] - record["outage_start"] == \
        pytest.approx(OUTAGE)
    window = (record["pause_start"] - EDGE, record["outage_end"] + EDGE)
    before = [p for p in probes if p[0] < window[0]]
    inside = [p for p in probes
              if record["pause_end"] + EDGE <= p[0] <=
              record["outage_end"] - EDGE]
    after = [p for p in probes if p[0] > window[1]]
    failed = [p for p in probes if not p[1]]
    assert len(before) >= 3 and all(p[1] for p in before), probes
    assert inside and not any(p[1] for p in inside), (record, probes)
    assert len(after) >= 3 and all(p[1] for p in after), (record, probes)
    assert all(window[0] <= p[0] <= window[1] for p in failed), \
        (record, probes)
    assert {p[2] for p in failed} <= rcs | {52, 56}, failed
    assert rcs & {p[2] for p in failed}, failed
    assert {p[3] for p in failed} <= codes, failed

    lines = cloud.truth_path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [record]
    token = clients(cloud, "admin").session.get_token()
    served = requests.get(cloud.base_url + "/devcloud/truth",
                          headers={"X-Auth-Token": token}).json()
    assert served["clock"] == "CLOCK_BOOTTIME"
    assert served["migrations"] == [record]
    user_token = clients(cloud, "alice").session.get_token()
    assert requests.get(cloud.base_url + "/devcloud/truth",
                        headers={"X-Auth-Token": user_token}
                        ).status_code == 403


def test_failed_migration_leaves_server_in_error(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(
        None, error="destination on fire"))
    guest = boot_guest(cloud, name="doomed")
    admin = clients(cloud, "admin").nova("2.79")
    before = getattr(admin.servers.get(guest.server_id),
                     "OS-EXT-SRV-ATTR:host")
    admin.servers.live_migrate(guest.server_id, host=None,
                               block_migration="auto")
    server = wait_for(lambda: (lambda s: s if s.status == "ERROR" else None)(
        admin.servers.get(guest.server_id)), what="ERROR")
    assert server.fault["message"] == "destination on fire"
    assert server.fault["code"] == 500
    assert getattr(server, "OS-EXT-SRV-ATTR:host") == before
    ready = _LiveMigrateReady(lambda name: admin, guest.server_id, before,
                              False)
    with pytest.raises(rally_exc.GetResourceErrorStatus):
        ready(None)
    (record,) = cloud.truth()
    assert record["status"] == "error"
    assert record["pause_start"] is None and record["outage_start"] is None
    assert record["fault"]["message"] == "destination on fire"
    # an ERROR server cannot be live-migrated again
    from novaclient import exceptions as nova_exc
    with pytest.raises(nova_exc.Conflict):
        admin.servers.live_migrate(guest.server_id, host=None,
                                   block_migration="auto")


def test_never_ending_outage_lasts_until_delete(devcloud_factory):
    cloud = devcloud_factory(profile=quick_profile(FaultKind.REFUSED, outage=None))
    guest = boot_guest(cloud, name="broken-vm")
    url = cloud.metadata.url(guest.server_id)
    assert requests.get(url + "/latest/meta-data/instance-id",
                        timeout=2).ok
    admin = clients(cloud, "admin").nova("2.79")
    admin.servers.live_migrate(guest.server_id, host="compute-2"
                               if getattr(admin.servers.get(guest.server_id),
                                          "OS-EXT-SRV-ATTR:host") ==
                               "compute-1" else "compute-1",
                               block_migration="auto")
    record = wait_for(lambda: next((r for r in cloud.truth()
                                    if r["status"] == "completed"), None),
                      what="migration")
    assert record["outage_end"] is None
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/latest/meta-data/instance-id", timeout=1)
        time.sleep(0.2)
    line = json.loads(cloud.truth_path.read_text())
    assert line["outage_end"] is None
    clients(cloud, "alice").nova("2.79").servers.delete(guest.server_id)
    assert guest.server_id not in cloud.backend.servers


def test_shipped_profiles():
    names = profiles.available()
    assert {"healthy", "ovn-slow", "flaky", "broken"} <= set(names)
    for name in names:
        profile = profiles.Profile.load(name)
        assert profile.description
        plans = [profile.draw(random.Random(i)) for i in range(200)]
        outages = [p.outage for p in plans if p.outage]
        if name == "healthy":
            assert all(0.2 <= o.duration <= 1.5 for o in outages)
            assert all(0.02 <= p.pause <= 0.3 for p in plans)
            assert not any(p.error for p in plans)
        if name == "ovn-slow":
            assert all(o.duration > 6 for o in outages)
        if name == "flaky":
            assert any(o.duration > 2 for o in outages)
            assert any(o.kind == FaultKind.HANG for o in outages)
            assert sum(o.duration < 1.5 for o in outages) > len(outages) / 2
        if name == "broken":
            assert outages and all(o.duration is None for o in outages)
            assert any(p.error for p in plans)


def test_draws_are_seeded():
    profile = profiles.Profile.load("flaky")
    assert [profile.draw(random.Random(5)) for _ in range(3)] == \
        [profile.draw(random.Random(5)) for _ in range(3)]


def test_bad_profiles_are_rejected():
    with pytest.raises(profiles.ProfileError):
        profiles.Profile.from_dict({"outcomes": []})
    with pytest.raises(profiles.ProfileError):
        profiles.Profile.from_dict({"outcomes": [
            {"kinds": {"teapot": 1}, "outage_seconds": 1}]})
    with pytest.raises(profiles.ProfileError):
        profiles.Profile.load("no-such-profile")


def test_profiles_reject_the_faults_the_devcloud_cannot_inject():
    """``drop`` needs iptables in a network namespace; process guests have none."""
    assert FaultKind.DROP not in profiles.OUTAGE_KINDS
    assert set(profiles.OUTAGE_KINDS) == set(FaultKind) - {FaultKind.DROP}
    with pytest.raises(profiles.ProfileError, match="cannot inject 'drop'"):
        profiles.Profile.from_dict({"outcomes": [
            {"kinds": {"drop": 1}, "outage_seconds": 1}]})


def test_profile_kinds_are_fault_kinds():
    plan = quick_profile(FaultKind.HTTP_503).draw(random.Random(1))
    assert plan.outage.kind is FaultKind.HTTP_503
    assert plan.outage.kind == "http_503" and f"{plan.outage.kind}" == "http_503"
