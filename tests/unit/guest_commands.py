"""Which meter command a fake guest received, and answers in the meter's formats.

Shared by the unit-test fakes.  The commands are rendered by
``rally_metadata_plugin.core.probe_script``; fakes answer by kind instead of
by exact text.
"""

import re

from rally_metadata_plugin.core import probe_script


def command_kind(cmd: str) -> str:
    """install, start, stop, cleanup, read, fast-on, fast-off or uptime."""
    if cmd.startswith("mkdir"):
        return "install"
    if "setsid" in cmd:
        return "start"
    if "kill -TERM" in cmd:
        return "stop"
    if "tail -c +" in cmd or cmd.startswith("cat /proc/uptime;"):
        return "read"
    if cmd.startswith(": >"):
        return "fast-on"  # possibly followed by a clock sample
    if cmd.startswith("rm -f") and "rmdir" in cmd:
        return "cleanup"
    if cmd.startswith("rm -f"):
        return "fast-off"
    return "uptime"


def poll_answer(cmd: str, uptime_and_log: str, meter: str = "alive 4242") -> str:
    """The answer to ``probe_script.poll_command`` from a whole-log answer.

    ``uptime_and_log`` is the ``/proc/uptime`` line followed by the complete
    log; ``meter`` the meter state line.  The log is cut at the offset the
    command asks for, as ``tail -c +N`` does.
    """
    uptime, _, log = uptime_and_log.partition("\n")
    match = re.search(r"tail -c \+(\d+) ", cmd)
    offset = int(match.group(1)) - 1 if match else 0
    assert meter.split()[0] in (probe_script.METER_ALIVE, probe_script.METER_GONE,
                                probe_script.METER_NO_PID)
    return f"{uptime}\n{meter}\n{log.encode()[offset:].decode()}"
