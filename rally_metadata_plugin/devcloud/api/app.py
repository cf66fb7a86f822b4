"""The WSGI application and HTTP server of the OpenStack APIs.

One loopback port serves every service under its path prefix
(``/identity``, ``/compute/v2.1``, ``/network``, ``/image``, plus
``/devcloud`` for the ground truth). The application authenticates,
dispatches through :mod:`.urls`, turns :class:`~..exceptions.ApiError` into
the owning service's wire format and logs every request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.wrappers import Request, Response

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.api import urls
from rally_metadata_plugin.devcloud.api.base import (Call, RequestLog,
                                                     error_response)
from rally_metadata_plugin.devcloud import limits, serving
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.identity import Caller

LOG = logging.getLogger(__name__)


class ApiApp:
    """The OpenStack APIs as one WSGI callable.

    :param extras: objects handlers may need besides the backend (the
        ground-truth log, the profile name).
    """

    def __init__(self, backend: CloudBackend, request_log: RequestLog,
                 extras: dict[str, Any]) -> None:
        self.backend = backend
        self.base_url = ""
        self._log = request_log
        self._extras = extras
        self._map = urls.url_map()

    def __call__(self, environ, start_response):
        started = time.monotonic()
        request = Request(environ)
        call = Call(request, self.backend, self.base_url,
                    extras=self._extras)
        response = self._dispatch(call)
        target = request.path + (f"?{request.query_string.decode()}"
                                 if request.query_string else "")
        project = (call.token.project.name if call.token and call.token.project
                   else "-")
        self._log.write(request.method, target, response.status_code,
                        (time.monotonic() - started) * 1000, project)
        return response(environ, start_response)

    def _dispatch(self, call: Call) -> Response:
        path = call.request.path
        service = urls.service_for(path)
        try:
            try:
                endpoint, args = self._map.bind_to_environ(
                    call.request.environ).match()
            except NotFound:
                raise (service.not_found(path) if service
                       else exc.KeystoneNotFound(f"No such path: {path}"))
            except MethodNotAllowed:
                raise (service.method_not_allowed(call.request.method)
                       if service else exc.KeystoneError("Not allowed", 405))
            service = endpoint.service
            token_id = call.request.headers.get("X-Auth-Token")
            if not endpoint.public:
                call.token = self.backend.identity.validate_token(token_id)
                Caller.of(call.token)    # APIs need a project-scoped token
            elif token_id:
                # discovery works with or without a (valid) token
                try:
                    call.token = self.backend.identity.validate_token(token_id)
                except exc.Unauthorized:
                    pass
            service.prepare(call)
            response = endpoint.handler(call, **args)
        except exc.ApiError as error:
            response = error_response(error)
        except Exception:
            LOG.exception("unhandled error on %s %s", call.request.method,
                          path)
            response = error_response(exc.ApiError("internal error"))
        if service is not None:
            try:
                service.finish(call, response)
            except Exception:
                LOG.exception("response hook failed")
        return response


class ApiServer:
    """:class:`ApiApp` on 127.0.0.1, served by a bounded
    :class:`~rally_metadata_plugin.devcloud.serving.WsgiServer`."""

    def __init__(self, app: ApiApp, port: int = 0, middleware=None,
                 connection_limit: int = limits.API_CONNECTIONS) -> None:
        # middleware: an optional WSGI wrapper (the conformance checker)
        self._server = serving.WsgiServer(middleware(app) if middleware else app,
                                          port, "devcloud-api",
                                          connection_limit=connection_limit)
        self.port = self._server.port
        self.base_url = f"http://127.0.0.1:{self.port}"
        app.base_url = self.base_url

    def stop(self) -> None:
        self._server.close()
