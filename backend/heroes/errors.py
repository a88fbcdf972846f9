"""The one error hierarchy: every error a client can cause or meet carries the answer it gets
(status, ``detail``, headers); heroes.api.errors turns any of them into that answer.

The exception's own message (``str(exc)``) is for the log; ``detail`` is what the client reads.
Nothing here imports the web layer: the domain and the database layer raise these.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar


class HeroesError(Exception):
    """Base of every error with a known answer (Polar's ``PolarError``)."""

    status_code: ClassVar[int] = 500
    detail: str = "Internal Server Error"
    headers: ClassVar[Mapping[str, str]] = {}
    #: Logged by the handler at this level (NOTSET: not logged), with ``log_message``.
    log_level: ClassVar[int] = logging.NOTSET
    log_message: ClassVar[str] = ""


class BadRequest(HeroesError):
    """Something in the request the service cannot read; the message says what."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(HeroesError):
    """No ``resource`` (a hero, a team...) has the requested id: 404 ``"<resource> not found"``."""

    status_code = 404

    def __init__(self, resource: str) -> None:
        super().__init__(f"{resource} not found")
        self.resource = resource
        self.detail = f"{resource} not found"


class CursorInvalid(BadRequest):
    """A page cursor this service did not issue (garbled, truncated or forged)."""


class IdempotencyKeyInvalid(BadRequest):
    """The Idempotency-Key header is malformed (the message says how)."""


class IdempotencyKeyInFlight(HeroesError):
    """A request with the same Idempotency-Key is being processed right now (draft "The
    Idempotency-Key HTTP Header Field": a retry that overtakes the first request)."""

    status_code = 409
    detail = "A request with this Idempotency-Key is in progress"
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}


class IdempotencyKeyReused(HeroesError):
    """The Idempotency-Key was used before for a different request."""

    status_code = 422
    detail = "This Idempotency-Key was used for a different request"


class ValueRejected(HeroesError):
    """The database refused a value (a constraint or type the validation let through): a missed
    case stays a 4xx, not a 500."""

    status_code = 422
    detail = "Value rejected by the database"
    log_level = logging.WARNING
    log_message = "database rejected a value"


class DatabaseUnavailable(HeroesError):
    """The database cannot serve now (unreachable, connection lost, no pooled connection free
    in time, statement timeout): the request may succeed if retried later."""

    status_code = 503
    detail = "Database unavailable"
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}
    log_level = logging.ERROR
    log_message = "database unavailable"


class ConnectionLost(DatabaseUnavailable):
    """The connection broke while a statement ran: the server may or may not have applied it.
    ``after``: seconds from sending the statement to the loss (a reset comes at once, a silent
    network is given up on only after its timeout)."""

    def __init__(self, message: str, after: float = 0.0) -> None:
        super().__init__(message)
        self.after = after


class SchemaMissing(DatabaseUnavailable):
    """A table the code needs does not exist: the database is not migrated."""

    detail = "Database not migrated"
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "5"}
    log_message = "database schema missing (not migrated?)"
