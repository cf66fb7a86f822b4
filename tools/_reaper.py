"""Kill process groups once the process that started this one has exited.

    python3 tools/_reaper.py     # stdin: "+PGID" (watch) and "-PGID" (forget) lines

``tools/devcloud_task.py`` starts it with a pipe on its stdin and registers
the process group of every rally command it runs.  A parent-death signal
reaches a direct child only: the load-generating processes rally forks would
outlive a SIGKILLed ``devcloud_task.py`` and go on with their iteration.  At
end of file on stdin, which comes when its creator has exited however it
exited, this kills the groups still registered.  Standard library only.
"""

import os
import signal
import sys


def main() -> int:
    # in a session of its own; a stray Ctrl-C or hang-up must not disarm it
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:
        sign, number = line[:1], line[1:].strip()
        if number.isdigit() and sign == "+":
            groups.add(int(number))
        elif number.isdigit() and sign == "-":
            groups.discard(int(number))
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
