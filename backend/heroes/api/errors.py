"""Errors to HTTP answers, in one place: every heroes.errors.HeroesError by its own status, detail
and headers; FastAPI's validation errors as the tutorial's 422; anything else a logged 500."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

from heroes.errors import HeroesError

logger = logging.getLogger("heroes.errors")

#: Scope key under which ``_unhandled`` leaves the exception it logged, so that the outer ASGI
#: layer (heroes.server.edge), which sees it re-raised, does not log it a second time.
LOGGED_ERROR = "heroes.logged_error"


class AsciiJSONResponse(JSONResponse):
    """Escapes non-ASCII, so echoing hostile input (lone surrogates) can never fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return AsciiJSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _heroes_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HeroesError)
    if exc.log_level:
        logger.log(exc.log_level, "%s: %s", exc.log_message, exc)
    return error(exc.status_code, exc.detail, dict(exc.headers) or None)


async def _validation_failed(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error(422, jsonable_encoder(exc.errors()))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Runs inside the request context: the line carries the request id (heroes.logs).
    logger.error("unhandled error", exc_info=exc)
    request.scope[LOGGED_ERROR] = exc
    return error(500, "Internal Server Error")


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HeroesError, _heroes_error)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    # Any other error is a bug: a 500 with its traceback in the log.
    app.add_exception_handler(Exception, _unhandled)
