"""Kill process groups once the process that started this one has exited.

    python3 tools/_reaper.py     # stdin: "+PGID" (watch), "-PGID" (forget), "@DIR" lines

``tools/devcloud_task.py`` starts it with a pipe on its stdin and registers
the process group of every rally command it runs.  A parent-death signal
reaches a direct child only: the load-generating processes rally forks would
outlive a SIGKILLed ``devcloud_task.py`` and go on with their iteration.  At
end of file on stdin, which comes when its creator has exited however it
exited, this kills the groups still registered, then removes the "@"
directories: CPU control groups (rally's) that its creator could not remove,
once the processes killed have left them.  Standard library only.
"""

import os
import signal
import sys
import time

#: Seconds the killed processes get to leave the control groups to remove.
RMDIR_SECONDS = 5.0


def main() -> int:
    # in a session of its own; a stray Ctrl-C or hang-up must not disarm it
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    groups: set[int] = set()
    directories: list[str] = []
    for line in sys.stdin:
        sign, number = line[:1], line[1:].strip()
        if sign == "@" and number:
            directories.append(number)
        elif number.isdigit() and sign == "+":
            groups.add(int(number))
        elif number.isdigit() and sign == "-":
            groups.discard(int(number))
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + RMDIR_SECONDS
    for directory in directories:
        while os.path.isdir(directory):
            try:
                os.rmdir(directory)
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
