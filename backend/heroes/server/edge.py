"""The outermost ASGI layer: what the service does to every request, in one pass.

It wraps Starlette's ServerErrorMiddleware (see ``heroes.main.HeroesAPI``), so 413s, 500s and
every other answer get it all:
- the request id (heroes.server.observability): taken from a sane ``X-Request-ID`` or made, set in a
  contextvar (every log line of the request carries it) and returned as ``X-Request-ID``;
- the body limit (heroes.server.limits): an invalid or too large Content-Length is refused before
  anything runs, a body without one is counted as it is read;
- ``Connection: close`` on every answer while the worker drains (heroes.lifecycle);
- the request's count, duration and access line (heroes.server.observability); the duration
  starts when the proxy had the request (its ``X-Request-Start``), so the proxy's queue counts.

One layer instead of a middleware per concern: the request is read once (one pass over its
headers) and ``send`` is wrapped once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from time import perf_counter, time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heroes.api.errors import LOGGED_ERROR, error
from heroes.lifecycle import closing, is_draining
from heroes.logs import request_id_var
from heroes.server import limits, metrics
from heroes.server.observability import NO_RESPONSE, finished, queued_since, request_id_from

error_logger = logging.getLogger("heroes.errors")


class Edge:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, route_paths: Mapping[Any, str] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_paths = dict(route_paths or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        queued = 0.0
        client_id: bytes | None = None
        content_length: bytes | None = None
        user_agent = b""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if client_id is None:  # the first one counts
                    client_id = value
            elif key == b"user-agent":
                user_agent = value
            elif key == b"content-length" and content_length is None:
                content_length = value
            elif key == b"x-request-start":
                queued = queued_since(value, time())
        request_id = request_id_from(client_id)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        token = request_id_var.set(request_id)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), id_header]
                message["headers"] = closing(headers) if is_draining() else headers
            await send(message)

        metrics.IN_PROGRESS.inc()
        try:
            refused = limits.refusal(content_length, self.max_body_bytes)
            if refused is not None:
                await refused(scope, receive, send_with_id)
            else:
                if content_length is None:
                    receive = limits.counted(receive, self.max_body_bytes)
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
            metrics.IN_PROGRESS.dec()
            elapsed = perf_counter() - started
            finished(scope, status or NO_RESPONSE, elapsed, queued, user_agent, self.route_paths)
            request_id_var.reset(token)
