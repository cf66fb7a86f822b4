"""Render the guest probe script and the shell commands that drive it.

The script is plain POSIX ``sh``: it must run under busybox ash (CirrOS has
busybox applets and curl, no bash, no python) and under dash.  Design choices,
each answering a weakness of the one-probe-at-a-time loops in common use:

* Every probe is bounded (connect and total timeout), so an outage of any
  kind (refused, dropped packets, a hanging answer, HTTP errors, another
  instance's data) is written to the log while it happens.
* Probes are launched on a fixed schedule, each in its own background
  subshell, so a probe that hangs until its timeout does not stretch the
  sampling period: the edges of an outage stay known to within one period.
* A probe passes only on HTTP 200 whose body contains the expected text;
  the expected text is never empty.
* Per probe the guest forks once and spawns the HTTP client (and, where
  wget cannot bound itself, ``timeout``); the wait between probes costs no
  process, timestamps come from ``/proc/uptime``, wget's body comes back
  through a pipe and the content check is done with shell builtins.
* One record per probe, written with a single ``printf`` to a file opened in
  append mode, so concurrent probes never interleave within a line.

Record format (one line each, fields separated by one space)::

    <seq> <start> <end> <verdict> <reason>

``seq`` counts probes from 1, ``start``/``end`` are ``/proc/uptime`` seconds
taken just before the request and just after it, ``verdict`` is ``P`` or
``F`` and ``reason`` is ``ok``, ``http:<status>``, ``content``,
``curl:<exit code>`` or ``wget:<class>``.  Lines starting with ``#`` carry
meter events (``#start``, ``#stop``, ``#fatal``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from typing import Optional

METADATA_HOST = "169.254.169.254"
#: The instance's own hostname as served by the metadata service (EC2 API).
DEFAULT_URL = f"http://{METADATA_HOST}/latest/meta-data/hostname"
#: The OpenStack metadata document carrying the instance UUID.
OPENSTACK_METADATA_URL = f"http://{METADATA_HOST}/openstack/latest/meta_data.json"
HTTP_TOOLS = ("auto", "curl", "wget")
LOG_FORMAT_VERSION = 1

#: Exit status of the script when the guest has no usable HTTP client.
EXIT_NO_HTTP_CLIENT = 3
#: Exit status when no expected content could be determined.
EXIT_NO_EXPECTATION = 4
#: Exit status when wget cannot be bounded in time (no -T, no usable timeout).
EXIT_NO_PROBE_BOUND = 5
#: Exit status when another live meter holds the workdir (install and script).
EXIT_METER_BUSY = 6
#: Seconds the start-up check of ``timeout``'s syntax gives ``true``: far
#: more than it takes, even in a guest starved of CPU.
TIMEOUT_CHECK_SECONDS = 30


def ipv6_metadata_url(interface: str, path: str = "/openstack/latest/meta_data.json") -> str:
    """The metadata URL over IPv6 link-local, scoped to ``interface``.

    The zone is written ``%25`` as RFC 6874 says; see :func:`wget_url` for
    the form busybox wget needs.
    """
    return f"http://[fe80::a9fe:a9fe%25{interface}]{path}"


_ENCODED_ZONE = re.compile(r"^(?P<head>https?://\[[^\]/]*?)%25(?P<tail>[^\]/]*\])")


def wget_url(url: str) -> str:
    """``url`` with a raw ``%`` before the zone of an IPv6 literal host.

    curl decodes ``[fe80::a9fe:a9fe%25eth0]`` (and accepts a raw ``%``);
    busybox wget hands the bracketed host to the resolver undecoded and fails
    with "bad address" on ``%25``, but resolves ``fe80::a9fe:a9fe%eth0``.
    Anything else in the URL is left as it is.
    """
    return _ENCODED_ZONE.sub(r"\g<head>%\g<tail>", url, count=1)


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """Everything the guest script needs to know.

    Times are in seconds.  ``expect`` empty means: the guest's hostname, read
    once at start.
    """

    url: str = DEFAULT_URL
    expect: str = ""
    interval: float = 0.2
    fast_interval: float = 0.05
    connect_timeout: float = 0.5
    timeout: float = 1.0
    tool: str = "auto"
    workdir: str = "/tmp/rally-metadata-meter"
    log: str = ""
    pidfile: str = ""
    duration: float = 0.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Human-readable reasons why these settings are unusable."""
        found = []
        if not self.url.startswith(("http://", "https://")):
            found.append(f"url must be an http(s) URL, got {self.url!r}")
        for name in ("interval", "fast_interval", "connect_timeout", "timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                found.append(f"{name} must be a positive number of seconds, got {value!r}")
        if not (isinstance(self.duration, (int, float)) and math.isfinite(self.duration)
                and self.duration >= 0):
            found.append(f"duration must be 0 (unlimited) or positive, got {self.duration!r}")
        if not found and self.connect_timeout > self.timeout:
            found.append(
                f"connect_timeout ({self.connect_timeout}) must not exceed timeout ({self.timeout})"
            )
        if self.tool not in HTTP_TOOLS:
            found.append(f"tool must be one of {', '.join(HTTP_TOOLS)}, got {self.tool!r}")
        for name in ("url", "expect", "workdir", "log", "pidfile"):
            if "\n" in getattr(self, name):
                found.append(f"{name} must be a single line")
        return found

    @property
    def log_path(self) -> str:
        return self.log or f"{self.workdir}/meter.log"

    @property
    def pid_path(self) -> str:
        return self.pidfile or f"{self.workdir}/meter.pid"

    @property
    def fast_flag_path(self) -> str:
        """While this file exists the meter probes at ``fast_interval``."""
        return f"{self.workdir}/fast"

    @property
    def script_path(self) -> str:
        return f"{self.workdir}/meter.sh"

    @property
    def body_slots(self) -> int:
        """Scratch files reused round-robin by concurrent probes.

        A probe lives at most ``timeout`` seconds, so at most
        ``timeout / fast_interval`` probes overlap; keep a safety margin.
        """
        # busybox wget is bounded in whole seconds (see ``wget_timeout``).
        longest = max(self.timeout, self.wget_timeout)
        return int(math.ceil(longest / min(self.interval, self.fast_interval))) + 3

    @property
    def wget_timeout(self) -> int:
        """busybox wget (and ``timeout``) take whole seconds only."""
        return max(1, int(math.ceil(self.timeout)))

    @property
    def longest_silence(self) -> float:
        """Seconds a working meter may go without writing a record.

        A probe starts every period (the slow one at most) and writes its
        record within its bound (whole seconds for wget), plus a second of
        slack for a busy guest.
        """
        return max(self.interval, self.fast_interval) + self.wget_timeout + 1.0


def _seconds(value: float) -> str:
    """A decimal literal accepted by sleep, curl and awk-free shells."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


_SCRIPT_TEMPLATE = r"""#!/bin/sh
# rally-metadata-plugin guest meter, log format {version}.
# Probes a metadata URL on a fixed schedule and logs one line per probe.
URL={url}
WGET_URL={wget_url}
EXPECT={expect}
INTERVAL={interval}
FAST_INTERVAL={fast_interval}
CONNECT_TIMEOUT={connect_timeout}
TIMEOUT={timeout}
WGET_TIMEOUT={wget_timeout}
TOOL={tool}
LOG={log}
PIDFILE={pidfile}
FAST_FLAG={fast_flag}
SCRATCH={scratch}
SLOTS={slots}
DURATION={duration}

mkdir -p {workdir} || exit 1
# The meter runs in its workdir: that tells it from a process that took over
# the pid of a meter long gone (see meter_alive).
cd {workdir} || exit 1
{meter_alive}
# One meter per workdir: claim the pid file atomically (noclobber); a pid
# file whose meter is gone is stale and taken over.
if ! ( set -C; echo $$ >"$PIDFILE" ) 2>/dev/null; then
    read -r other _ <"$PIDFILE" 2>/dev/null || other=
    if [ "$other" != $$ ] && meter_alive "$other"; then
        {report_busy}
        exit {exit_busy}
    fi
    echo $$ >"$PIDFILE"
fi
exec 3>>"$LOG"

now() {{ read -r NOW _ </proc/uptime; }}
# CS = an uptime value in centiseconds (two decimals; no leading zeros).
centis() {{ CS=${{1%.*}}${{1#*.}}; CS=${{CS#0}}; CS=${{CS#0}}; CS=${{CS:-0}}; }}
event() {{ now; printf '#%s %s %s\n' "$1" "$NOW" "$2" >&3; }}

is_busybox_wget() {{
    command -v wget >/dev/null 2>&1 || return 1
    case "$(wget --help 2>&1)" in *BusyBox*) return 0 ;; esac
    return 1
}}
# auto: busybox wget is the cheapest probe (one small static binary), then
# curl, then any other wget.
if [ "$TOOL" = auto ]; then
    if is_busybox_wget; then TOOL=wget
    elif command -v curl >/dev/null 2>&1; then TOOL=curl
    elif command -v wget >/dev/null 2>&1; then TOOL=wget
    else TOOL=none
    fi
fi
if [ "$TOOL" != none ] && ! command -v "$TOOL" >/dev/null 2>&1; then TOOL=none; fi
if [ "$TOOL" = none ]; then
    event fatal "no-http-client neither curl nor wget is installed"
    exit {exit_no_client}
fi
WGET_QUIET=-q
WGET_LIMIT="-T $WGET_TIMEOUT"
WGET_GUARD=
if [ "$TOOL" = wget ]; then
    # GNU wget -q hides errors; busybox wget -q only hides progress.  GNU
    # wget retries a timed-out request 20 times (with back-off): one try only.
    is_busybox_wget || WGET_QUIET="-nv --tries=1"
    # Some busybox builds crash on -T; bound the probe with timeout instead.
    # busybox before 1.30 (CirrOS 0.5) only knows "timeout -t SECS PROG".
    # The checks ask which syntax timeout takes, not how fast the guest is:
    # their bound is generous, as a guest starved of CPU may take over a
    # second to run true, and a check cut short would read as no syntax.
    wget -q -T 1 -O /dev/null http://127.0.0.1:9/ >/dev/null 2>&1
    if [ $? -ge 128 ]; then
        WGET_LIMIT=
        if timeout {check_bound} true >/dev/null 2>&1; then WGET_GUARD="timeout $WGET_TIMEOUT"
        elif timeout -t {check_bound} true >/dev/null 2>&1; then
            WGET_GUARD="timeout -t $WGET_TIMEOUT"
        else
            event fatal "no-probe-bound wget crashes on -T and timeout does not work"
            exit {exit_no_bound}
        fi
    fi
fi
if [ -z "$EXPECT" ]; then
    read -r EXPECT </proc/sys/kernel/hostname 2>/dev/null || EXPECT=
    [ -n "$EXPECT" ] || EXPECT=$(hostname 2>/dev/null)
    # busybox hostname prints "?" when the hostname is empty.
    case "$EXPECT" in "?") EXPECT= ;; esac
fi
if [ -z "$EXPECT" ]; then
    event fatal "no-expectation no expected content given and the hostname is empty"
    exit {exit_no_expect}
fi

# The pid file disappears when the meter has logged its stop, so the
# controller need not wait for the process to be reaped.
trap 'event stop signal; rm -f "$PIDFILE"; exit 0' TERM INT HUP

# Wait between probes: busybox ash reads with a fractional timeout from a
# FIFO nobody writes to, which costs no process; dash has no read -t.
TICK="$SCRATCH.tick"
WAIT_WITH=sleep
if {{ [ -p "$TICK" ] || mkfifo "$TICK"; }} 2>/dev/null; then
    ( read -t 0.01 _ <>"$TICK" ) 2>/dev/null
    [ $? -eq 1 ] && WAIT_WITH=read
fi
pause() {{
    if [ "$WAIT_WITH" = read ]; then read -t "$1" _ <>"$TICK"; else sleep "$1"; fi
}}

# Reads a whole file into BODY with builtins only (no extra process).
slurp() {{
    BODY=
    while IFS= read -r line || [ -n "$line" ]; do BODY="$BODY$line
"; done <"$1"
}}

probe() {{
    out="$SCRATCH.$(( $1 % SLOTS ))"
    now; t0=$NOW
    if [ "$TOOL" = curl ]; then
        curl -s -g -o "$out.body" -w '%{{http_code}}\n' \
            --connect-timeout "$CONNECT_TIMEOUT" -m "$TIMEOUT" "$URL" >"$out.code" 2>/dev/null
        rc=$?
        now
        read -r code <"$out.code" || code=000
        if [ "$rc" -ne 0 ]; then reason="curl:$rc"
        elif [ "$code" != 200 ]; then reason="http:$code"
        else reason=ok
        fi
    else
        # The body comes back through a pipe: the shell reads it in blocks,
        # where reading a file with the read builtin costs a syscall a byte.
        BODY=$($WGET_GUARD wget $WGET_QUIET -O - $WGET_LIMIT "$WGET_URL" 2>"$out.err")
        rc=$?
        now
        if [ "$rc" -eq 0 ]; then
            reason=ok
            # busybox timeout counts whole seconds, and TCP resends a dropped
            # SYN after 1 s: an answer that came later than TIMEOUT describes
            # the service after this probe's start, so enforce TIMEOUT here.
            centis "$t0"; c0=$CS; centis "$NOW"
            [ $(( CS - c0 )) -ge {late_centis} ] && reason=wget:timeout
        else
            slurp "$out.err"
            case "$BODY" in
                *"HTTP/1."?" "[0-9][0-9][0-9]*)
                    code=${{BODY#*HTTP/1.? }}; reason="http:${{code%%[!0-9]*}}" ;;
                *"ERROR "[0-9][0-9][0-9]*)
                    code=${{BODY#*ERROR }}; reason="http:${{code%%[!0-9]*}}" ;;
                *[Rr]efused*) reason=wget:refused ;;
                *"timed out"*|*[Tt]imeout*) reason=wget:timeout ;;
                *[Rr]eset*) reason=wget:reset ;;
                *unreachable*) reason=wget:unreachable ;;
                *) if [ "$rc" -ge 124 ]; then reason=wget:timeout; else reason="wget:exit$rc"; fi ;;
            esac
        fi
    fi
    verdict=F
    if [ "$reason" = ok ]; then
        [ "$TOOL" = curl ] && slurp "$out.body"
        case "$BODY" in *"$EXPECT"*) verdict=P ;; *) reason=content ;; esac
    fi
    printf '%s %s %s %s %s\n' "$1" "$t0" "$NOW" "$verdict" "$reason" >&3
}}

event start "v={version} tool=$TOOL interval=$INTERVAL fast_interval=$FAST_INTERVAL timeout=$TIMEOUT"
now; DEADLINE=
if [ "$DURATION" != 0 ]; then centis "$NOW"; DEADLINE=$(( CS + {duration_centis} )); fi
seq=0
while :; do
    seq=$(( seq + 1 ))
    probe "$seq" &
    if [ -e "$FAST_FLAG" ]; then pause "$FAST_INTERVAL"; else pause "$INTERVAL"; fi
    # Reap finished probes so the shell's job table stays small.
    jobs >/dev/null 2>&1
    if [ -n "$DEADLINE" ]; then
        now
        centis "$NOW"
        if [ "$CS" -ge "$DEADLINE" ]; then wait; event stop duration; exit 0; fi
    fi
done
"""


def render_probe_script(settings: ProbeSettings) -> str:
    """The guest script for ``settings``, as text for ``sh``."""
    quote = shlex.quote
    return _SCRIPT_TEMPLATE.format(
        version=LOG_FORMAT_VERSION,
        url=quote(settings.url),
        wget_url=quote(wget_url(settings.url)),
        expect=quote(settings.expect),
        interval=_seconds(settings.interval),
        fast_interval=_seconds(settings.fast_interval),
        connect_timeout=_seconds(settings.connect_timeout),
        timeout=_seconds(settings.timeout),
        wget_timeout=settings.wget_timeout,
        tool=quote(settings.tool),
        log=quote(settings.log_path),
        pidfile=quote(settings.pid_path),
        fast_flag=quote(settings.fast_flag_path),
        scratch=quote(f"{settings.workdir}/probe"),
        slots=settings.body_slots,
        workdir=quote(settings.workdir),
        duration=_seconds(settings.duration),
        duration_centis=int(math.ceil(settings.duration * 100)),
        # The timeout, less the 10 ms /proc/uptime resolution.
        late_centis=max(1, int(math.ceil(settings.timeout * 100)) - 1),
        exit_no_client=EXIT_NO_HTTP_CLIENT,
        exit_no_expect=EXIT_NO_EXPECTATION,
        exit_no_bound=EXIT_NO_PROBE_BOUND,
        check_bound=TIMEOUT_CHECK_SECONDS,
        exit_busy=EXIT_METER_BUSY,
        meter_alive=_meter_alive_function(settings),
        report_busy=_report_busy(settings, "$other"),
    )


# -- Commands the controller runs in the guest over SSH ----------------------
# Each is one ``sh -c``-able line, so a controller needs one round trip per
# step.  They only use POSIX sh and busybox applets.


def _meter_alive_function(settings: ProbeSettings) -> str:
    """Defines the sh function ``meter_alive PID``: PID is this workdir's running meter.

    A pid file outlives a killed meter, and its pid may then belong to any
    process.  The meter runs in its workdir, so a process counts only when
    its working directory is the workdir (builtins only: no process spawned;
    a zombie has no working directory).
    """
    return (
        'meter_alive() { case $1 in ""|*[!0-9]*) return 1 ;; esac; '
        f'[ "/proc/$1/cwd" -ef {shlex.quote(settings.workdir)} ]; }}'
    )


def _read_pid(settings: ProbeSettings) -> str:
    """Sets ``p`` to the pid in the pid file, or to nothing."""
    pidfile = shlex.quote(settings.pid_path)
    return f"p=; [ -s {pidfile} ] && read -r p _ <{pidfile}"


def _report_busy(settings: ProbeSettings, pid: str) -> str:
    """A sh command saying on stderr that meter ``pid`` (a sh word) holds the workdir."""
    return (f"printf 'Another guest meter (pid %s) is running in %s\\n' {pid} "
            f"{shlex.quote(settings.workdir)} >&2")


def install_command(settings: ProbeSettings) -> str:
    """Read the script from stdin into place, starting from an empty log.

    Refuses (exit :data:`EXIT_METER_BUSY`, a sentence on stderr) while
    another live meter holds the workdir, before its log and pid file are
    removed: two meters would overwrite each other's.  (Rewriting the script
    file does not disturb a meter past its start-up: its shell has parsed the
    main loop, which it never leaves but to exit.)
    """
    q = shlex.quote
    pidfile = q(settings.pid_path)
    refuse = f"{_report_busy(settings, '$p')}; exit {EXIT_METER_BUSY}"
    return (
        f"mkdir -p {q(settings.workdir)} && cat >{q(settings.script_path)} && "
        f"{{ {_meter_alive_function(settings)}; {_read_pid(settings)}; "
        f"if meter_alive \"$p\"; then {refuse}; fi; }} && "
        f"rm -f {q(settings.log_path)} {pidfile} {q(settings.fast_flag_path)}"
    )


def start_command(settings: ProbeSettings) -> str:
    """Start the meter detached from the SSH channel in its own session.

    ``setsid`` makes the meter a process-group leader, so stopping the group
    also stops any probe in flight.  Prints the pid once the meter wrote it.
    """
    q = shlex.quote
    script, pidfile = q(settings.script_path), q(settings.pid_path)
    return (
        f"cd {q(settings.workdir)} && "
        f"if command -v setsid >/dev/null 2>&1; then "
        f"setsid sh {script} </dev/null >/dev/null 2>&1 & "
        f"else nohup sh {script} </dev/null >/dev/null 2>&1 & fi; "
        f"i=0; while [ ! -s {pidfile} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
        f"cat {pidfile}"
    )


#: How long the stop command waits for the meter to log its stop before it
#: kills the meter's process group.
STOP_GRACE_SECONDS = 3


def stop_command(settings: ProbeSettings) -> str:
    """Stop the meter's whole process group, wait for it, print the log."""
    q = shlex.quote
    pidfile, log = q(settings.pid_path), q(settings.log_path)
    return (
        f"if [ -s {pidfile} ]; then read -r p <{pidfile}; "
        # No "--" before the negative pid: dash's kill rejects it (and busybox
        # ash's complains), so "kill -TERM -- -$p" left the probes running.
        f"kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; "
        # Done when the meter removed its pid file (it logged "#stop") or is
        # gone; a zombie still answers kill -0 until its parent reaps it.
        f"i=0; while [ -e {pidfile} ] && kill -0 $p 2>/dev/null && "
        f"[ $i -lt {STOP_GRACE_SECONDS * 10} ]; do "
        f"sleep 0.1; i=$((i+1)); done; "
        f"kill -KILL -$p 2>/dev/null; rm -f {pidfile}; fi; "
        f"cat {log} 2>/dev/null; true"
    )


def cleanup_command(settings: ProbeSettings) -> str:
    """Remove the meter's own files from its workdir, then the workdir if that
    left it empty: for after :func:`stop_command` printed the log.  A log or
    pid file placed outside the workdir, and anything else in it, stay."""
    q = shlex.quote
    files = [settings.script_path, settings.fast_flag_path]
    files += [] if settings.log else [settings.log_path]
    files += [] if settings.pidfile else [settings.pid_path]
    workdir = q(settings.workdir)
    return (f"rm -f {' '.join(map(q, files))} {workdir}/probe.*; "
            f"rmdir {workdir} 2>/dev/null; true")


def read_log_command(settings: ProbeSettings) -> str:
    """Print the whole log while the meter keeps running (uptime on the first line).

    For tools and tests; the controller polls with :func:`poll_command`.
    """
    return f"cat /proc/uptime; cat {shlex.quote(settings.log_path)} 2>/dev/null; true"


#: What :func:`poll_command` says about the meter process.
METER_ALIVE = "alive"
METER_GONE = "gone"
METER_NO_PID = "no-pid"


def poll_command(settings: ProbeSettings, offset: int) -> str:
    """Sample the guest clock, check the meter, print the log from byte ``offset`` on.

    One round trip per poll, and it transfers only what the meter appended
    since the controller's last read (``offset`` 0: the whole log), so a
    long run does not cost more per poll as the log grows.  Output, see
    :func:`parse_poll_reply`: the ``/proc/uptime`` line; ``alive PID``,
    ``gone PID`` or ``no-pid -``; then the log's bytes from ``offset`` on.
    """
    return (
        f"cat /proc/uptime; {_meter_alive_function(settings)}; {_read_pid(settings)}; "
        f'if meter_alive "$p"; then echo "{METER_ALIVE} $p"; '
        f'elif [ -n "$p" ]; then echo "{METER_GONE} $p"; else echo "{METER_NO_PID} -"; fi; '
        f"tail -c +{int(offset) + 1} {shlex.quote(settings.log_path)} 2>/dev/null; true"
    )


@dataclasses.dataclass(frozen=True)
class PollReply:
    """The output of :func:`poll_command`, split up."""

    #: The ``/proc/uptime`` line as printed.
    uptime: str
    #: :data:`METER_ALIVE`, :data:`METER_GONE`, :data:`METER_NO_PID`, or ""
    #: when the output was cut short.
    meter: str
    pid: Optional[int]
    #: The log from the requested offset on; its last line may be incomplete.
    data: str


def parse_poll_reply(out: str) -> PollReply:
    """Split the output of :func:`poll_command`; never raises."""
    uptime, _, rest = out.partition("\n")
    state, _, data = rest.partition("\n")
    meter, _, pid = state.partition(" ")
    if meter not in (METER_ALIVE, METER_GONE, METER_NO_PID):
        meter = ""
    return PollReply(uptime, meter, int(pid) if pid.isdigit() else None, data)


def fast_mode_command(settings: ProbeSettings, enabled: bool) -> str:
    """Switch the probe rate to ``fast_interval`` (or back)."""
    path = shlex.quote(settings.fast_flag_path)
    return f": >{path}" if enabled else f"rm -f {path}"
