"""Domain errors, and the one place that maps every error to an HTTP answer."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

from heroes.db import DatabaseUnavailable, SchemaMissing, ValueRejected

logger = logging.getLogger("heroes.errors")

#: Scope key under which ``_unhandled`` leaves the exception it logged, so that the outer ASGI
#: layer (heroes.edge), which sees it re-raised, does not log it a second time.
LOGGED_ERROR = "heroes.logged_error"


class NotFound(Exception):
    """No ``resource`` (a hero, a team...) has the requested id: 404 ``"<resource> not found"``."""

    def __init__(self, resource: str) -> None:
        super().__init__(f"{resource} not found")
        self.resource = resource


class IdempotencyKeyInvalid(Exception):
    """The Idempotency-Key header is malformed (the message says how)."""


class IdempotencyKeyInFlight(Exception):
    """A request with the same Idempotency-Key is being processed right now."""


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was used before for a different request."""


class CursorInvalid(Exception):
    """A page cursor this service did not issue (garbled, truncated or forged)."""


class AsciiJSONResponse(JSONResponse):
    """Escapes non-ASCII, so echoing hostile input (lone surrogates) can never fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return AsciiJSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _not_found(_request: Request, exc: Exception) -> JSONResponse:
    return error(404, str(exc))


async def _bad_request(_request: Request, exc: Exception) -> JSONResponse:
    return error(400, str(exc))


async def _key_in_flight(_request: Request, _exc: Exception) -> JSONResponse:
    # Draft "The Idempotency-Key HTTP Header Field": a retry that overtakes the first request.
    return error(
        409, "A request with this Idempotency-Key is in progress", headers={"Retry-After": "1"}
    )


async def _key_reused(_request: Request, _exc: Exception) -> JSONResponse:
    return error(422, "This Idempotency-Key was used for a different request")


async def _validation_failed(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error(422, jsonable_encoder(exc.errors()))


async def _database_rejected(_request: Request, exc: Exception) -> JSONResponse:
    # Validation should stop bad values first; this keeps a missed case a 4xx, not a 500.
    logger.warning("database rejected a value: %s", exc)
    return error(422, "Value rejected by the database")


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, SchemaMissing):
        logger.error("database schema missing (not migrated?): %s", exc)
        return error(503, "Database not migrated", headers={"Retry-After": "5"})
    logger.error("database unavailable: %s", exc)
    return error(503, "Database unavailable", headers={"Retry-After": "1"})


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Runs inside the request context: the line carries the request id (heroes.logs).
    logger.error("unhandled error", exc_info=exc)
    request.scope[LOGGED_ERROR] = exc
    return error(500, "Internal Server Error")


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(IdempotencyKeyInvalid, _bad_request)
    app.add_exception_handler(CursorInvalid, _bad_request)
    app.add_exception_handler(IdempotencyKeyInFlight, _key_in_flight)
    app.add_exception_handler(IdempotencyKeyReused, _key_reused)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(ValueRejected, _database_rejected)
    # Unreachable, connection lost, no pooled connection in time, statement timeout, not
    # migrated. Any other error is a bug: a 500 with its traceback in the log.
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    app.add_exception_handler(Exception, _unhandled)
