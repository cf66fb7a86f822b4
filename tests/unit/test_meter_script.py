"""Unit tests of the guest script renderer and the commands that drive it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from rally_metadata_plugin.core import probe_script as script
from rally_metadata_plugin.core.probe_script import ProbeSettings

BUSYBOX = shutil.which("busybox")
DASH = shutil.which("dash")

SHELLS = {
    "busybox": [BUSYBOX, "sh"] if BUSYBOX else None,
    "dash": [DASH] if DASH else None,
}


def shell_argv(name):
    argv = SHELLS[name]
    if argv is None:
        why = f"{name} is not installed"
        if os.environ.get("RMP_REQUIRE_ALL") == "1":
            pytest.fail(f"RMP_REQUIRE_ALL=1 but {why}", pytrace=False)
        pytest.skip(why)
    return argv


TRICKY = "it's a \"test\" $HOME `id` \\ ; & | * ? [a] ~ {x} %s %{http_code}"


# -- settings validation ----------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    (dict(url="ftp://x/"), "url must be an http(s) URL, got 'ftp://x/'"),
    (dict(url="169.254.169.254"), "url must be an http(s) URL"),
    (dict(interval=0), "interval must be a positive number of seconds, got 0"),
    (dict(interval=-0.2), "interval must be a positive number of seconds, got -0.2"),
    (dict(fast_interval=float("nan")), "fast_interval must be a positive number of seconds"),
    (dict(timeout=float("inf")), "timeout must be a positive number of seconds, got inf"),
    (dict(connect_timeout="1"), "connect_timeout must be a positive number of seconds, got '1'"),
    (dict(duration=-1), "duration must be 0 (unlimited) or positive, got -1"),
    (dict(duration=float("nan")), "duration must be 0 (unlimited) or positive, got nan"),
    (dict(duration=float("inf")), "duration must be 0 (unlimited) or positive, got inf"),
    (dict(connect_timeout=2.0, timeout=1.0), "connect_timeout (2.0) must not exceed timeout (1.0)"),
    (dict(tool="nc"), "tool must be one of auto, curl, wget, got 'nc'"),
    (dict(expect="a\nb"), "expect must be a single line"),
    (dict(workdir="/tmp/a\nb"), "workdir must be a single line"),
    (dict(log="x\n"), "log must be a single line"),
    (dict(pidfile="\n"), "pidfile must be a single line"),
])
def test_settings_validation_messages(overrides, message):
    with pytest.raises(ValueError) as info:
        ProbeSettings(**overrides)
    assert message in str(info.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ValueError) as info:
        ProbeSettings(url="x", interval=0, tool="nc")
    text = str(info.value)
    assert "url must be" in text and "interval must be" in text and "tool must be" in text
    assert text.count(";") == 2


def test_defaults_are_valid():
    settings = ProbeSettings()
    assert settings.problems() == []
    assert settings.url == "http://169.254.169.254/latest/meta-data/hostname"
    assert settings.log_path == "/tmp/rally-metadata-meter/meter.log"
    assert settings.pid_path == "/tmp/rally-metadata-meter/meter.pid"
    assert settings.fast_flag_path == "/tmp/rally-metadata-meter/fast"
    assert settings.script_path == "/tmp/rally-metadata-meter/meter.sh"


def test_explicit_paths():
    settings = ProbeSettings(workdir="/w", log="/l/x.log", pidfile="/p/x.pid")
    assert (settings.log_path, settings.pid_path) == ("/l/x.log", "/p/x.pid")


@pytest.mark.parametrize("interval,fast,timeout", [
    (0.2, 0.05, 1.0), (0.2, 0.05, 0.3), (0.1, 0.5, 0.2), (1.0, 1.0, 2.5), (0.05, 0.02, 0.1),
])
def test_scratch_slots_outlive_the_longest_probe(interval, fast, timeout):
    """Slots are reused round-robin; a slot must not be reused while its probe runs.

    A probe lives at most ``timeout`` (curl) or ``wget_timeout`` whole seconds
    (busybox wget/timeout), at the fastest probe rate.
    """
    settings = ProbeSettings(interval=interval, fast_interval=fast, timeout=timeout,
                             connect_timeout=min(0.5, timeout))
    longest = max(timeout, settings.wget_timeout)
    assert settings.body_slots * min(interval, fast) >= longest + 2 * min(interval, fast)


@pytest.mark.parametrize("timeout,whole", [(0.1, 1), (1.0, 1), (1.01, 2), (2.5, 3)])
def test_wget_timeout_is_whole_seconds(timeout, whole):
    settings = ProbeSettings(timeout=timeout, connect_timeout=min(0.5, timeout))
    assert settings.wget_timeout == whole
    assert f"WGET_TIMEOUT={whole}\n" in script.render_probe_script(settings)


@pytest.mark.parametrize("value,text", [(0.2, "0.2"), (1.0, "1"), (0.05, "0.05"),
                                        (0.0, "0"), (2.5004, "2.5"), (10, "10")])
def test_seconds_literal(value, text):
    assert script._seconds(value) == text


# -- the rendered script -----------------------------------------------------------


def rendered_settings():
    return [
        ProbeSettings(),
        ProbeSettings(expect="vm-1", interval=0.5, fast_interval=0.1, tool="curl",
                      duration=30),
        ProbeSettings(expect=TRICKY, url="http://169.254.169.254/x?a=1&b='2'",
                      workdir="/tmp/dir with spaces/$x", tool="wget"),
        ProbeSettings(url=script.ipv6_metadata_url("eth0")),
    ]


@pytest.mark.parametrize("shell", ["busybox", "dash"])
@pytest.mark.parametrize("index", range(4))
def test_rendered_script_parses(shell, index):
    text = script.render_probe_script(rendered_settings()[index])
    result = subprocess.run([*shell_argv(shell), "-n"], input=text, capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_syntax_check_is_not_vacuous(shell):
    """``sh -n`` does reject broken scripts (so the test above can fail)."""
    broken = script.render_probe_script(ProbeSettings()).replace("esac", "", 1)
    result = subprocess.run([*shell_argv(shell), "-n"], input=broken, capture_output=True,
                            text=True, timeout=10)
    assert result.returncode != 0


@pytest.mark.parametrize("shell", ["busybox", "dash"])
@pytest.mark.parametrize("value", ["vm-1", TRICKY, "  spaces  ", "a'b", "ünïcødé"])
def test_quoted_values_round_trip(shell, value):
    """The settings reach the script verbatim, whatever they contain."""
    settings = ProbeSettings(expect=value, url=f"http://h/{value.replace(' ', '%20')}")
    text = script.render_probe_script(settings)
    assignments = "\n".join(l for l in text.splitlines() if re.match(r"^(EXPECT|URL)=", l))
    result = subprocess.run([*shell_argv(shell), "-c",
                             assignments + '\nprintf "%s\\n%s" "$EXPECT" "$URL"'],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{value}\n{settings.url}"


def test_rendered_values():
    settings = ProbeSettings(expect="vm-1", interval=0.25, fast_interval=0.05, timeout=1.5,
                             connect_timeout=0.4, tool="curl", workdir="/w", duration=7.5)
    text = script.render_probe_script(settings)
    assert text.startswith("#!/bin/sh\n")
    for expected in ["URL=http://169.254.169.254/latest/meta-data/hostname\n",
                     "EXPECT=vm-1\n", "INTERVAL=0.25\n", "FAST_INTERVAL=0.05\n",
                     "CONNECT_TIMEOUT=0.4\n", "TIMEOUT=1.5\n", "WGET_TIMEOUT=2\n",
                     "TOOL=curl\n", "LOG=/w/meter.log\n", "PIDFILE=/w/meter.pid\n",
                     "FAST_FLAG=/w/fast\n", f"SLOTS={settings.body_slots}\n",
                     "DURATION=7.5\n", "DEADLINE=$(( CS + 750 ))"]:
        assert expected in text, expected
    assert "{" + "version" not in text  # every placeholder was filled
    assert f"exit {script.EXIT_NO_HTTP_CLIENT}" in text
    assert f"exit {script.EXIT_NO_EXPECTATION}" in text


def test_no_empty_expectation():
    """With no expected text the script reads the hostname and refuses an empty one."""
    text = script.render_probe_script(ProbeSettings(expect=""))
    assert "EXPECT=''\n" in text
    guard = text.index('if [ -z "$EXPECT" ]; then\n    event fatal "no-expectation')
    hostname = text.index("/proc/sys/kernel/hostname")
    first_probe = text.index('probe "$seq" &')
    assert hostname < guard < first_probe
    # The content check is a substring match on the whole expected text.
    assert 'case "$BODY" in *"$EXPECT"*) verdict=P' in text


def test_script_avoids_non_posix_constructs():
    text = script.render_probe_script(ProbeSettings())
    for bashism in ("[[", "function ", "$'", "local ", "declare ", "<<<", "date +%N", "&>"):
        assert bashism not in text, bashism
    assert "read -r NOW _ </proc/uptime" in text


def test_ipv6_url():
    assert script.ipv6_metadata_url("eth0") == \
        "http://[fe80::a9fe:a9fe%25eth0]/openstack/latest/meta_data.json"
    assert script.ipv6_metadata_url("ens3", "/x") == "http://[fe80::a9fe:a9fe%25ens3]/x"
    # curl needs -g (no URL globbing) for the brackets.
    assert "curl -s -g " in script.render_probe_script(ProbeSettings())


# -- the commands -----------------------------------------------------------------


def commands(settings):
    return {
        "install": script.install_command(settings),
        "start": script.start_command(settings),
        "stop": script.stop_command(settings),
        "cleanup": script.cleanup_command(settings),
        "read": script.read_log_command(settings),
        "poll": script.poll_command(settings, 0),
        "poll_later": script.poll_command(settings, 12345),
        "fast_on": script.fast_mode_command(settings, True),
        "fast_off": script.fast_mode_command(settings, False),
    }


@pytest.mark.parametrize("shell", ["busybox", "dash"])
@pytest.mark.parametrize("workdir", ["/tmp/rally-metadata-meter", "/tmp/a b/$c'd"])
def test_commands_are_one_line_and_parse(shell, workdir):
    for name, command in commands(ProbeSettings(workdir=workdir)).items():
        assert "\n" not in command, name
        result = subprocess.run([*shell_argv(shell), "-n", "-c", command],
                                capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, (name, result.stderr)


def test_cleanup_command_removes_only_the_meters_own_files():
    default = script.cleanup_command(ProbeSettings(workdir="/tmp/m"))
    assert default == ("rm -f /tmp/m/meter.sh /tmp/m/fast /tmp/m/meter.log /tmp/m/meter.pid "
                       "/tmp/m/probe.*; rmdir /tmp/m 2>/dev/null; true")
    # a log or pid file the user placed elsewhere is theirs to keep
    placed = script.cleanup_command(ProbeSettings(workdir="/tmp/m", log="/var/log/m.log",
                                                  pidfile="/run/m.pid"))
    assert "m.log" not in placed and "m.pid" not in placed
    # never a recursive removal: the workdir goes only when nothing else is in it
    assert "-r" not in default


def test_stop_command_signals_the_process_group_portably():
    command = script.stop_command(ProbeSettings())
    assert "kill -TERM -$p" in command
    assert "kill -KILL -$p" in command
    # "kill -SIG -- -PGID" is rejected by dash's kill builtin.
    assert "-- -$p" not in command


def test_start_command_detaches():
    command = script.start_command(ProbeSettings(workdir="/w"))
    assert "setsid sh /w/meter.sh </dev/null >/dev/null 2>&1 &" in command
    assert "nohup sh /w/meter.sh </dev/null" in command
    assert command.rstrip().endswith("cat /w/meter.pid")


def test_fast_mode_commands():
    settings = ProbeSettings(workdir="/w")
    assert script.fast_mode_command(settings, True) == ": >/w/fast"
    assert script.fast_mode_command(settings, False) == "rm -f /w/fast"


def test_install_command_resets_state():
    command = script.install_command(ProbeSettings(workdir="/w"))
    assert command.startswith("mkdir -p /w && cat >/w/meter.sh && ")
    assert "rm -f /w/meter.log /w/meter.pid /w/fast" in command


@pytest.mark.parametrize("timeout,late", [(1.0, 99), (0.3, 29), (2.5, 249)])
def test_wget_success_after_the_timeout_is_a_failure(timeout, late):
    """busybox wget is only bounded in whole seconds (and a dropped SYN is resent
    after 1 s): a wget answer arriving later than ``timeout`` is a failure."""
    text = script.render_probe_script(ProbeSettings(timeout=timeout,
                                                    connect_timeout=min(0.5, timeout)))
    assert f'[ $(( CS - c0 )) -ge {late} ] && reason=wget:timeout' in text


# -- IPv6 link-local URLs ------------------------------------------------------------


@pytest.mark.parametrize("url,for_wget", [
    ("http://[fe80::a9fe:a9fe%25eth0]/openstack/latest/meta_data.json",
     "http://[fe80::a9fe:a9fe%eth0]/openstack/latest/meta_data.json"),
    ("http://[fe80::a9fe:a9fe%25ens3]:8080/x%25y", "http://[fe80::a9fe:a9fe%ens3]:8080/x%25y"),
    ("http://[fe80::a9fe:a9fe%eth0]/", "http://[fe80::a9fe:a9fe%eth0]/"),
    ("http://[fd00::1]/latest/meta-data/hostname", "http://[fd00::1]/latest/meta-data/hostname"),
    ("http://169.254.169.254/a%25b", "http://169.254.169.254/a%25b"),
])
def test_wget_url_decodes_only_the_zone_separator(url, for_wget):
    assert script.wget_url(url) == for_wget


def test_ipv6_url_is_rendered_in_the_form_each_tool_accepts():
    """busybox wget does not decode %25 in the host ("bad address"); curl does."""
    text = script.render_probe_script(ProbeSettings(url=script.ipv6_metadata_url("eth0")))
    assert "URL='http://[fe80::a9fe:a9fe%25eth0]/openstack/latest/meta_data.json'\n" in text
    assert "WGET_URL='http://[fe80::a9fe:a9fe%eth0]/openstack/latest/meta_data.json'\n" in text
    probe = text[text.index("probe() {"):]
    assert '-m "$TIMEOUT" "$URL"' in probe  # curl
    assert '$WGET_LIMIT "$WGET_URL"' in probe
    assert 'wget $WGET_QUIET -O "$out.body" $WGET_LIMIT "$URL"' not in probe


def test_timeout_guard_detects_the_old_busybox_syntax():
    """busybox < 1.30 (CirrOS 0.5) only takes "timeout -t SECS PROG": try both, modern first."""
    text = script.render_probe_script(ProbeSettings(timeout=2.5, connect_timeout=0.5))
    bound = script.TIMEOUT_CHECK_SECONDS
    modern = text.index(f'if timeout {bound} true >/dev/null 2>&1; then '
                        'WGET_GUARD="timeout $WGET_TIMEOUT"')
    old = text.index(f'elif timeout -t {bound} true >/dev/null 2>&1; then\n'
                     '            WGET_GUARD="timeout -t $WGET_TIMEOUT"')
    fatal = text.index('event fatal "no-probe-bound ')
    assert modern < old < fatal < text.index('probe "$seq" &')
    assert f"exit {script.EXIT_NO_PROBE_BOUND}\n" in text
    assert 'WGET_GUARD="timeout $WGET_TIMEOUT"; fi' not in text




# -- polling ---------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_poll_reports_the_meter_and_the_log_from_an_offset(shell, tmp_path):
    settings = ProbeSettings(workdir=str(tmp_path / "w"))
    os.makedirs(settings.workdir)
    with open(settings.log_path, "w") as log:
        log.write("#start 1.00 v=1\n1 1.00 1.01 P ok\n2 1.2")

    def poll(offset):
        done = subprocess.run([*shell_argv(shell), "-c", script.poll_command(settings, offset)],
                              capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return script.parse_poll_reply(done.stdout)

    reply = poll(0)
    assert float(reply.uptime.split()[0]) > 0
    assert (reply.meter, reply.pid) == (script.METER_NO_PID, None)
    assert reply.data == "#start 1.00 v=1\n1 1.00 1.01 P ok\n2 1.2"
    assert poll(16).data == "1 1.00 1.01 P ok\n2 1.2"
    assert poll(100).data == ""
    # A pid file whose process is gone, then one naming a live process in the workdir.
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout
    with open(settings.pid_path, "w") as pidfile:
        pidfile.write(gone)
    assert (poll(0).meter, poll(0).pid) == (script.METER_GONE, int(gone))
    holder = subprocess.Popen(["sleep", "30"], cwd=settings.workdir)
    try:
        with open(settings.pid_path, "w") as pidfile:
            pidfile.write(f"{holder.pid}\n")
        assert (poll(0).meter, poll(0).pid) == (script.METER_ALIVE, holder.pid)
    finally:
        holder.kill()
        holder.wait()


def test_poll_reply_cut_short_is_not_misread():
    assert script.parse_poll_reply("") == script.PollReply("", "", None, "")
    reply = script.parse_poll_reply("12.00 1.00\nweird\n1 1 1 P ok\n")
    assert (reply.uptime, reply.meter, reply.pid) == ("12.00 1.00", "", None)
