"""A single timer thread for the devcloud's delayed state changes.

BUILD->ACTIVE transitions and the opening/closing of metadata listeners are
tiny callbacks due at a precise time; one thread with a heap serves them all
instead of one ``threading.Timer`` thread per event. (It schedules
callbacks, not servers: nova's placement is in :mod:`.model.compute`.)
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from typing import Callable

from rally_metadata_plugin.devcloud import boottime

LOG = logging.getLogger(__name__)


class TimerThread:
    """Runs callbacks at given ``CLOCK_BOOTTIME`` instants on one thread.

    Callbacks must be short: a slow callback delays every later one.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name="devcloud-timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def call_at(self, when: float, func: Callable[[], None]) -> None:
        """Run ``func`` once ``boottime.now() >= when``."""
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._counter), func))
            self._cond.notify_all()

    def call_later(self, delay: float, func: Callable[[], None]) -> None:
        self.call_at(boottime.now() + delay, func)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        wait = self._heap[0][0] - boottime.now()
                        if wait <= 0:
                            break
                        self._cond.wait(timeout=min(wait, 0.5))
                    else:
                        self._cond.wait(timeout=0.5)
                if self._stopped:
                    return
                _, _, func = heapq.heappop(self._heap)
            try:
                func()
            except Exception:  # a broken callback must not stop the clock
                LOG.exception("timer callback failed")
