"""Argument validation as `rally task validate` does it, on the shipped task file."""

import pathlib
from unittest import mock

import pytest
import rally.plugins
import yaml
from rally import api as rally_api
from rally import exceptions
from rally.task import engine
from rally.task import task_cfg
from rally.task import scenario

rally.plugins.load()

ROOT = pathlib.Path(__file__).resolve().parents[2]
TASK = ROOT / "tasks" / "metadata_lm.yaml"
NAME = "MetadataDowntime.boot_and_live_migrate"


def render(**task_args):
    text = rally_api._Task(mock.Mock()).render_template(TASK.read_text(), str(TASK.parent),
                                                        **task_args)
    return yaml.safe_load(text)


def workloads(config):
    return [w for subtask in task_cfg.TaskConfig(config).subtasks for w in subtask["workloads"]]


def validate_syntax(config):
    """What `rally task validate` runs first, before it touches any cloud."""
    for workload in workloads(config):
        engine.TaskEngine._validate_workload(mock.Mock(), workload, vtype="syntax")


@pytest.mark.parametrize("args_file", [None, "real-cloud.yaml", "devcloud.yaml"])
def test_shipped_task_and_arguments_are_valid(args_file):
    task_args = yaml.safe_load((TASK.parent / "args" / args_file).read_text()) if args_file else {}
    config = render(**task_args)
    assert config["version"] == 2 and config["title"]
    (workload,) = workloads(config)
    assert workload["sla"] == {"max_metadata_downtime": 6.0, "failure_rate": {"max": 0}}
    validate_syntax(config)


def test_task_defaults_suit_a_real_cloud():
    (workload,) = workloads(render())
    args = workload["args"]
    assert args["flavor"] == {"name": "m1.tiny"} and "cirros" in args["image"]["name"]
    assert (args["username"], args["use_floating_ip"], args["migrations"]) == \
        ("cirros", True, 3)
    # No floating network named: the scenario takes the first external network.
    assert "floating_network" not in args
    assert workload["runner"] == {"times": 3, "concurrency": 1}


def test_devcloud_arguments():
    task_args = yaml.safe_load((TASK.parent / "args" / "devcloud.yaml").read_text())
    (workload,) = workloads(render(**task_args))
    args = workload["args"]
    assert (args["port"], args["username"], args["image"], args["flavor"]) == \
        (2222, "cirros", {"name": "cirros"}, {"name": "m1.tiny"})
    assert args["migrations"] == 2 and workload["runner"]["times"] == 2
    assert "api_info" not in str(task_args)  # the microversion lives in the env spec


@pytest.mark.parametrize("task_args,message", [
    ({"probe_interval": -0.2}, "Argument 'probe_interval' is invalid: -0.2 is less than or "
                               "equal to the minimum of 0"),
    ({"migrations": 0}, "Argument 'migrations' is invalid: 0 is less than the minimum of 1"),
    ({"ssh_port": 70000}, "Argument 'port' is invalid"),
    ({"block_migration": "sometimes"}, "Argument 'block_migration' is invalid"),
    ({"fast_probe_interval": 1.0}, "fast_probe_interval (1.0) must not exceed probe_interval"),
    ({"recovery_timeout": 0.5}, "recovery_timeout (0.5 s) must be longer than recovery_probes"),
    ({"target_hosts": []}, None),  # an empty list renders as "omitted" in the task file
    ({"max_downtime": -1}, "max_metadata_downtime"),
    ({"max_downtime": {"per_migraton": 6}}, "'per_migraton' was unexpected"),
])
def test_wrong_task_arguments_give_clear_messages(task_args, message):
    config = render(**task_args)
    if message is None:
        validate_syntax(config)
        return
    with pytest.raises(exceptions.InvalidTaskConfig) as error:
        validate_syntax(config)
    assert message in str(error.value)


def args_errors(**args):
    config = {"args": dict({"image": {"name": "cirros"}, "flavor": {"name": "m1.tiny"}}, **args)}
    return scenario.Scenario.validate(NAME, context=None, config=config, plugin_cfg=None,
                                      vtype="syntax")


def test_unknown_argument_is_rejected():
    (error,) = args_errors(migratons=3)
    assert "Unexpected argument(s) found ['migratons']" in error
    assert "rally plugin show" in error


def test_missing_image_is_reported():
    errors = scenario.Scenario.validate(NAME, context=None, config={"args": {}},
                                        plugin_cfg=None, vtype="syntax")
    assert any("'image', 'flavor' should be specified" in e for e in errors)


@pytest.mark.parametrize("args", [
    {}, {"block_migration": True}, {"block_migration": False}, {"target_hosts": ["c1", "c2"]},
    {"metadata_url": "http://169.254.169.254/latest/meta-data/hostname", "expect": "vm-1"},
    {"ip_version": 6, "guest_interface": "ens3"}, {"password": "cubswin:)"},
    {"nics": [{"net-name": "private"}]}, {"server_kwargs": {"availability_zone": "nova"}},
    {"http_tool": "wget", "probe_timeout": 2.5},
    {"network_probe": "tcp", "network_probe_interval": 0.5, "network_probe_timeout": 2},
    {"network_probe": "none"},
])
def test_valid_arguments(args):
    assert args_errors(**args) == []


@pytest.mark.parametrize("args,name", [
    ({"metadata_url": "169.254.169.254/openstack"}, "metadata_url"),
    ({"expect": ""}, "expect"),
    ({"ip_version": 5}, "ip_version"),
    ({"http_tool": "python"}, "http_tool"),
    ({"nics": [{"port": "x"}]}, "nics"),
    ({"recovery_probes": 0}, "recovery_probes"),
    ({"use_floating_ip": "yes"}, "use_floating_ip"),
    ({"guest_interface": "eth0; rm -rf /"}, "guest_interface"),
    ({"network_probe": "udp"}, "network_probe"),
    ({"network_probe_interval": 0}, "network_probe_interval"),
])
def test_invalid_arguments_name_the_argument(args, name):
    errors = args_errors(**args)
    assert errors and name in errors[0]


def test_every_argument_is_documented():
    info = scenario.Scenario.get(NAME).get_info()
    assert info["title"] == "Measure metadata-service downtime seen by a guest across live " \
                            "migrations."
    properties = info["schema"]["properties"]
    documented = {p["name"] for p in info["parameters"]}
    assert set(properties) == documented
    for name, prop in properties.items():
        assert prop.get("description"), name
    assert info["schema"]["additionalProperties"] is False


# -- the floating network, checked against the cloud (semantic validation) ------------

PUBLIC = {"id": "6f1e0c5a-public", "name": "public", "router:external": True}
PROVIDER = {"id": "0b7d9e2c-provider", "name": "provider", "router:external": False}
PRIVATE = {"id": "9a3c4d1e-private", "name": "private", "router:external": False}


class FakeCredential:
    """A user of the validation context whose neutron lists ``networks``."""

    def __init__(self, networks, username="rally-user"):
        self.username = username
        self.neutron = mock.Mock()
        self.neutron.list_networks.return_value = {"networks": list(networks)}

    def clients(self):
        clients = mock.Mock()
        clients.neutron.return_value = self.neutron
        return clients


def network_errors(workload_args, networks):
    """What `rally task validate` says about networks, on a cloud listing ``networks``.

    Rally's semantic validation runs every validator of the scenario; the
    image and flavor ones need more of a cloud than this fake, so only the
    results of validators about networks are kept.
    """
    context = {"users": [{"credential": FakeCredential(networks)}]}
    config = {"args": dict(workload_args)}
    results = scenario.Scenario.validate(NAME, context=context, config=config,
                                         plugin_cfg=None, vtype="semantic")
    return [r for r in results if "network" in r.partition("Details:")[0]]


def shipped_workload_args(**task_args):
    (workload,) = workloads(render(**task_args))
    return workload["args"]


def test_provider_network_cloud_passes_with_use_floating_ip_false():
    args = shipped_workload_args(use_floating_ip=False)
    assert args["use_floating_ip"] is False
    assert network_errors(args, [PROVIDER]) == []
    # Even a floating network that does not exist is not looked at then.
    assert network_errors(dict(args, floating_network="public"), [PROVIDER]) == []


def test_shipped_task_defaults_validate_on_a_cloud_with_an_external_network():
    assert network_errors(shipped_workload_args(), [PRIVATE, PUBLIC]) == []
    devcloud = yaml.safe_load((TASK.parent / "args" / "devcloud.yaml").read_text())
    assert network_errors(shipped_workload_args(**devcloud), [PRIVATE, PUBLIC]) == []


@pytest.mark.parametrize("floating_network", ["public", PUBLIC["id"]])
def test_floating_network_is_a_name_or_an_id(floating_network):
    assert network_errors({"floating_network": floating_network}, [PRIVATE, PUBLIC]) == []


def test_omitted_floating_network_needs_an_external_network():
    (error,) = network_errors({}, [PROVIDER, PRIVATE])
    assert "use_floating_ip is true but there is no external network" in error
    assert "give floating_network, or set use_floating_ip to false" in error
    assert "rally-user" in error


def test_unknown_floating_network_names_the_argument_and_the_choices():
    (error,) = network_errors({"floating_network": "publik"}, [PRIVATE, PUBLIC])
    assert "floating_network 'publik' is neither the name nor the id of a network" in error
    assert "external networks: public (id 6f1e0c5a-public)" in error


def test_internal_network_is_no_floating_network():
    (error,) = network_errors({"floating_network": "private"}, [PRIVATE, PUBLIC])
    assert "floating_network 'private' is network private (id 9a3c4d1e-private), which is " \
           "not external" in error


# -- workdir -------------------------------------------------------------------------


def test_workdir_is_accepted_and_documented():
    assert args_errors(workdir="/var/tmp/rally-meter_1.2+x@y") == []
    info = scenario.Scenario.get(NAME).get_info()
    (doc,) = [p["doc"] for p in info["parameters"] if p["name"] == "workdir"]
    assert "/tmp/rally-metadata-meter-" in doc


@pytest.mark.parametrize("workdir,message", [
    ("tmp/meter", "workdir must be an absolute path (starting with /), got 'tmp/meter'"),
    ("/tmp/a\nb", "workdir must be a single line"),
    ("/tmp/my meter", "workdir must not contain spaces or shell metacharacters: ' '"),
    ("/tmp/$HOME;x", "workdir must not contain spaces or shell metacharacters: '$', ';'"),
])
def test_wrong_workdir_says_what_is_wrong(workdir, message):
    (error,) = args_errors(workdir=workdir)
    assert message in error


def meter_arguments(**overrides):
    from rally_metadata_plugin.core import scenario_args
    from rally_metadata_plugin.plugins import scenario as plugin

    args = plugin._workload_args(scenario.Scenario.get(NAME), {"args": overrides})
    return scenario_args.MeterArguments.from_mapping(args)


def test_probe_settings_use_the_workdir():
    server_id = "0b7f2a1e-6c4d-4a8e-9d0f-1234567890ab"
    default = meter_arguments().probe_settings(server_id=server_id, duration=10)
    assert default.workdir == "/tmp/rally-metadata-meter-0b7f2a1e"
    chosen = meter_arguments(workdir="/var/tmp/m").probe_settings(server_id=server_id,
                                                                   duration=10)
    assert (chosen.workdir, chosen.log_path) == ("/var/tmp/m", "/var/tmp/m/meter.log")
    with pytest.raises(ValueError, match="workdir must be an absolute path"):
        meter_arguments(workdir="m").probe_settings(server_id=server_id, duration=10)


def test_network_meter_arguments_in_the_shipped_task():
    assert shipped_workload_args()["network_probe"] == "icmp"
    devcloud = yaml.safe_load((TASK.parent / "args" / "devcloud.yaml").read_text())
    (workload,) = workloads(render(**devcloud))
    assert workload["args"]["network_probe"] == "tcp"
    assert "max_network_downtime" not in workload["sla"]
    (limited,) = workloads(render(max_network_downtime={"per_migration": 5.0}))
    assert limited["sla"]["max_network_downtime"] == {"per_migration": 5.0}
    validate_syntax(render(max_network_downtime=5.0))
