"""Request id, access line and request metrics: one pure-ASGI middleware, the outermost layer.

It wraps Starlette's ServerErrorMiddleware (see ``heroes.main.HeroesAPI``), so 413s, 500s and
every other answer get an ``X-Request-ID`` header, an access line and a count.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import suppress
from secrets import token_hex
from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heroes import metrics
from heroes.errors import LOGGED_ERROR, error
from heroes.logs import ACCESS_LOGGER, request_id_var

#: A client's X-Request-ID is kept when it matches this (no spaces, no CR/LF, bounded length).
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9_.:-]{1,128}")
#: Probes and scrapes get no access line unless they fail (they still count in the metrics).
QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
#: Status recorded for a request that ended without a response (client gone, task cancelled).
NO_RESPONSE = 499
USER_AGENT_MAX = 256

access_logger = logging.getLogger(ACCESS_LOGGER)
error_logger = logging.getLogger("heroes.errors")


def request_id_from(value: bytes | None) -> str:
    """The client's id when it is sane, else a new random one (32 hex digits)."""
    if value is not None and SANE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    return token_hex(16)


class RequestObservability:
    """Per request: take or make the request id (a contextvar, so every log line of the request
    carries it), return it as ``X-Request-ID``, count the request and its duration by route
    template, write one access line.

    ``route_paths`` maps the endpoints of plain Starlette routes (/docs, /openapi.json) to their
    paths: only FastAPI's own routes leave ``scope["route"]`` behind.
    """

    def __init__(self, app: ASGIApp, route_paths: Mapping[Any, str] | None = None) -> None:
        self.app = app
        self.route_paths = dict(route_paths or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        client_id: bytes | None = None
        user_agent = b""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if client_id is None:
                    client_id = value
            elif key == b"user-agent":
                user_agent = value
        request_id = request_id_from(client_id)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        token = request_id_var.set(request_id)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        metrics.InFlight.count += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # ServerErrorMiddleware has answered 500 through errors._unhandled (which logged the
            # traceback) and re-raises "so that servers can log it": uvicorn would print it a
            # second time, without the request id, and close the keep-alive connection.
            if scope.get(LOGGED_ERROR) is not exc:
                error_logger.error("unhandled error", exc_info=exc)
            if status == 0:  # nobody answered (the error handler itself failed)
                with suppress(Exception):
                    await error(500, "Internal Server Error")(scope, receive, send_with_id)
            # A response that had started cannot be fixed: the server closes the connection.
        finally:
            metrics.InFlight.count -= 1
            self._finished(scope, status or NO_RESPONSE, perf_counter() - started, user_agent)
            request_id_var.reset(token)

    def _finished(self, scope: Scope, status: int, seconds: float, user_agent: bytes) -> None:
        route = scope.get("route")
        if route is not None:
            template = getattr(route, "path", None) or metrics.UNMATCHED
        else:
            template = self.route_paths.get(scope.get("endpoint"), metrics.UNMATCHED)
        method: str = scope["method"]
        metrics.observe(method, template, status, seconds)
        path: str = scope["path"]
        if not access_logger.isEnabledFor(logging.INFO):
            return
        if status < 400 and path in QUIET_PATHS:
            return
        client = scope.get("client")
        fields = {
            "method": method,
            "path": path,
            "route": template,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "client": client[0] if client else None,
            "user_agent": user_agent[:USER_AGENT_MAX].decode("latin-1"),
        }
        if scope.get("query_string"):
            fields["query"] = scope["query_string"].decode("latin-1")
        access_logger.info("%s %s %d", method, path, status, extra={"fields": fields})
