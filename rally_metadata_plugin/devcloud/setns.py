"""Run a function inside a named network namespace (``ip netns add NAME``).

The calling thread's namespace is switched with ``setns(2)`` in a thread of
its own, so sockets the function creates stay in that namespace while every
thread of the process can use them. Python 3.11 has no ``os.setns``; libc's
is called through ctypes. Linux only; needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def in_namespace(name: str, function: Callable[[], T]) -> T:
    """``function()`` run by a thread that joined namespace ``name``:
    sockets it creates stay in that namespace, usable from any thread.
    (Python 3.11 has no ``os.setns``.)"""
    result: dict = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {name}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            result["value"] = function()
        except BaseException as error:   # handed to the caller
            result["error"] = error

    thread = threading.Thread(target=target, name=f"setns-{name}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
