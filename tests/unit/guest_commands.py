"""Which meter command a fake guest received (shared by the unit-test fakes).

The commands are rendered by ``rally_metadata_plugin.core.probe_script``; fakes
answer by kind instead of by exact text.
"""


def command_kind(cmd: str) -> str:
    """install, start, stop, read, fast-on, fast-off or uptime."""
    if cmd.startswith("mkdir"):
        return "install"
    if "setsid" in cmd:
        return "start"
    if "kill -TERM" in cmd:
        return "stop"
    if cmd.startswith("cat /proc/uptime;"):
        return "read"
    if cmd.startswith(": >"):
        return "fast-on"  # possibly followed by a clock sample
    if cmd.startswith("rm -f"):
        return "fast-off"
    return "uptime"
