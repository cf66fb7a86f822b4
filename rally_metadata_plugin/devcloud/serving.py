"""How the devcloud serves: bounded, whatever the load.

Two servers, two shapes, each with a fixed number of threads:

* the APIs (one WSGI application) run on waitress: one I/O thread
  multiplexes every connection, a fixed pool of worker threads runs the
  application, and past ``connection_limit`` open connections waitress stops
  accepting, so further clients wait in the listen backlog (slow, not broken)
  until connections close;
* the metadata endpoints (one listener per guest, opened and closed as
  outages come and go, holding connections for ``hang`` outages) share one
  asyncio event loop in one thread (:class:`EventLoopThread`) of the
  metadata server process (:mod:`.metadata_server`): a held connection
  costs a file descriptor, not a thread.

A thread per connection, as before, grew without limit under load (20,001
threads and "Too many open files" at 50 guests) instead of slowing down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import resource
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

from waitress import wasyncore
from waitress.server import create_server

from rally_metadata_plugin.devcloud import limits

LOG = logging.getLogger(__name__)
# waitress warns at every queued request; queueing is how the API slows down
# under load by design, so only its errors are worth a line
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

T = TypeVar("T")

def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit.

    The devcloud holds several descriptors per guest (listeners, held
    metadata connections, SSH sessions, guest pipes); the common soft
    default of 1024 is reached at a few dozen guests. Returns the new limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            LOG.warning("cannot raise the open-file limit from %s: %s", soft, e)
    return soft


class WsgiServer:
    """A WSGI application on ``127.0.0.1:port`` served by waitress from a
    daemon thread (see the module docstring for its bounds)."""

    def __init__(self, app, port: int, name: str,
                 threads: int = limits.API_THREADS,
                 connection_limit: int = limits.API_CONNECTIONS) -> None:
        self._server = create_server(
            app, host="127.0.0.1", port=port, threads=threads,
            connection_limit=connection_limit, channel_timeout=limits.API_IDLE_SECONDS,
            backlog=1024, ident="devcloud", expose_tracebacks=False,
            # poll(), not select(): select() dies on a descriptor numbered
            # past 1024, which a devcloud with 100 guests has
            asyncore_use_poll=True,
            clear_untrusted_proxy_headers=True)
        self.port: int = self._server.effective_port
        self._thread = threading.Thread(target=self._server.run, name=name,
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection, stop the workers.

        All in the I/O thread (waitress' socket map is not thread-safe, and a
        listening socket shut down behind its back makes its accept() fail
        in a loop); closing the listening socket there makes new connects
        fail with ECONNREFUSED, and the loop returns once the map is empty.
        """
        server = self._server

        def close_all() -> None:
            wasyncore.close_all(server._map)

        try:
            server.trigger.pull_trigger(close_all)
        except OSError:
            close_all()
        self._thread.join(timeout)
        server.task_dispatcher.shutdown(timeout=timeout)


class EventLoopThread:
    """An asyncio event loop running in one daemon thread.

    Other threads hand it work with :meth:`call` (a plain function run in the
    loop, for state the loop owns) or :meth:`run` (a coroutine), and wait for
    the result.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name,
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # stopped: cancel what is left (held connections) and close
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(
                asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def watch_stalls(self, threshold: float, report: Callable[[float], None],
                     period: float = 0.1) -> None:
        """Call ``report(seconds)`` in the loop each time it ran a beat
        scheduled every ``period`` seconds ``threshold`` seconds or more
        late: for that long, nothing the loop serves was answered.

        A stalled loop is not busy: it waits for a CPU, or for the
        interpreter lock while other threads of its process work (why the
        metadata endpoints' loop has a process of its own,
        :mod:`.metadata_server`).
        """
        def beat(due: float) -> None:
            now = time.monotonic()
            if now - due >= threshold:
                report(now - due)
            self.loop.call_at(now + period, beat, now + period)

        self.loop.call_soon_threadsafe(
            lambda: beat(time.monotonic()))

    @property
    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, coroutine: Awaitable[T], timeout: float = 10.0) -> T:
        """Run ``coroutine`` in the loop and return its result."""
        if self.in_loop:
            raise RuntimeError("EventLoopThread.run() from its own loop "
                               "would wait for itself")
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError:            # the loop is closed: it never runs
            coroutine.close()
            raise
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def call(self, func: Callable[..., T], *args: Any,
             timeout: float = 10.0) -> T:
        """Run ``func(*args)`` in the loop (at once if already there)."""
        if self.in_loop:
            return func(*args)

        async def call() -> T:
            return func(*args)
        return self.run(call(), timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return  # closed meanwhile
        self._thread.join(timeout)
