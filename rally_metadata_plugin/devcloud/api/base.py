"""What every service's HTTP layer shares: the per-request :class:`Call`,
the :class:`Service` hooks, JSON helpers and the request log."""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
from pathlib import Path
from typing import Any, Callable

from werkzeug.wrappers import Request, Response

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model.backend import CloudBackend
from rally_metadata_plugin.devcloud.model.identity import Caller, Token


@dataclasses.dataclass
class Call:
    """One API request as the handlers see it."""

    request: Request
    backend: CloudBackend
    base_url: str
    token: Token | None = None
    microversion: tuple[int, int] = (2, 1)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def caller(self) -> Caller:
        if self.token is None:
            raise exc.AuthenticationRequired()
        return Caller.of(self.token)

    def json(self, error: type[exc.ApiError]) -> dict:
        """The JSON object body; ``error`` (a 400 class) if there is none."""
        try:
            body = json.loads(self.request.get_data(as_text=True) or "null")
        except ValueError as e:
            raise error(f"Malformed request body: {e}")
        if not isinstance(body, dict):
            raise error("Malformed request body: a JSON object is required")
        return body

    def mv_at_least(self, major: int, minor: int) -> bool:
        return self.microversion >= (major, minor)


Handler = Callable[..., Response]


@dataclasses.dataclass(frozen=True)
class Service:
    """Per-service behaviour around the handlers.

    :param prefix: URL prefix, e.g. ``/compute``.
    :param not_found: error raised for unknown paths under the prefix.
    :param prepare: runs before the handler (e.g. microversion parsing).
    :param finish: decorates every response (e.g. microversion headers).
    """

    name: str
    prefix: str
    not_found: Callable[[str], exc.ApiError]
    method_not_allowed: Callable[[str], exc.ApiError]
    prepare: Callable[[Call], None] = lambda call: None
    finish: Callable[[Call, Response], None] = lambda call, response: None


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A routed handler; ``public`` ones need no token (discovery)."""

    service: Service
    handler: Handler
    public: bool = False


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, headers=headers,
                    content_type="application/json")


def empty_response(status: int = 204) -> Response:
    return Response(b"", status=status)


def error_response(error: exc.ApiError) -> Response:
    status, content_type, body = error.render()
    return Response(body, status=status, content_type=content_type)


class RequestLog:
    """``requests.log``: one line per API request, for reading a run."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def write(self, method: str, path: str, status: int, ms: float,
              project: str = "-") -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="milliseconds")
        line = (f"{stamp} boottime={boottime.now():.3f} {method} {path} "
                f"{status} {ms:.1f}ms project={project}\n")
        with self._lock:
            if not self._file.closed:
                self._file.write(line)

    def close(self) -> None:
        with self._lock:
            self._file.close()
