"""werkzeug serving helpers shared by the API server and metadata endpoints."""

from __future__ import annotations

import logging
import socket
import threading

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

LOG = logging.getLogger(__name__)


class QuietHandler(WSGIRequestHandler):
    """No per-request lines on stderr (the API keeps its own request log)."""

    def log_request(self, *args, **kwargs) -> None:
        pass

    def log(self, type: str, message: str, *args) -> None:
        if type == "error":
            LOG.debug(message, *args)


def serve(app, port: int, name: str) -> BaseWSGIServer:
    """Bind ``app`` on ``127.0.0.1:port`` (threaded) and serve it from a
    daemon thread."""
    server = make_server("127.0.0.1", port, app, threaded=True,
                         request_handler=QuietHandler)
    threading.Thread(target=server.serve_forever,
                     kwargs={"poll_interval": 0.5}, name=name,
                     daemon=True).start()
    return server


def close(server: BaseWSGIServer) -> None:
    """Stop listening now.

    ``shutdown()`` of the listening socket makes new connects fail with
    ECONNREFUSED at once and wakes ``serve_forever``'s select(), so
    ``server.shutdown()`` does not wait out the poll interval.
    """
    try:
        server.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    server.shutdown()
    server.server_close()
