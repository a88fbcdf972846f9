"""The ``Idempotency-Key`` request header (IETF httpapi draft "The Idempotency-Key HTTP Header
Field") on the write routes: a client that retries a request with the same key gets the first
answer again instead of a second write.

- The first request with a key runs its write and stores its answer (status, body) with the key
  and a fingerprint of the request, in the write's own transaction: a crash keeps both or
  neither, so a retry either replays the answer or performs the write for the first time.
- A retry with the same key and the same request: the stored answer, with
  ``Idempotent-Replayed: true``; nothing is written.
- The same key for a different request (method, path or body): 422. The same key while the
  first request is still being processed: 409 (try again shortly).
- Keys belong to the caller: with API tokens configured they are scoped by a SHA-256 digest of
  the bearer token (the token itself is never stored). Answers are kept IDEMPOTENCY_TTL_S
  (24 h by default) and purged in small batches by a background task of each worker.
- Only successful answers are stored: a request that fails (404, 503...) leaves no key behind,
  so its retry is processed afresh.

A route applies it: ``once(key, payload, write)`` calls the route's query function with the
``Answer`` to store (heroes.answers), and the query function stores it in its own transaction
with the write (BEGIN IMMEDIATE on SQLite). A second answer for a key is refused by the primary
key (scope, key), which undoes the write with it; the earlier answer is then looked up and
replayed (on PostgreSQL the undone INSERT still used up a sequence number: a gap in the ids,
nothing else).
"In progress": a request with the same key that this worker is still processing is answered
409 at once (a per-worker set of keys in flight). A duplicate reaching another worker while the
first's statement runs waits for it (milliseconds; the primary key's row lock) and gets the
replay; it can never write a second time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel

from heroes import answers, background
from heroes.answers import Answer
from heroes.api.responses import RETRY_AFTER, Responses, error_answer, json_response
from heroes.config import Settings
from heroes.db import Database, DatabaseUnavailable, Row, Session, ValueRejected
from heroes.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    NotFound,
)

logger = logging.getLogger("heroes.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX = 255
# The draft's value is a Structured Field string ("..."); the bare form is accepted too, as
# most clients send it. The characters are those of UUIDs, ULIDs and base64 tokens.
_CHARS = rf"[A-Za-z0-9._:~+/=-]{{1,{KEY_MAX}}}"
KEY_PATTERN = rf'^(?:{_CHARS}|"{_CHARS}")$'
_KEY = re.compile(KEY_PATTERN)
#: Rows deleted per purge statement, and statements per purge run (the rest waits for the next).
PURGE_BATCH = 500
PURGE_MAX_BATCHES = 100

HEADER_DESCRIPTION = (
    "Makes the request safe to retry: the first request with a key is processed and its answer "
    "stored for 24 h; a retry with the same key and the same request gets that answer again "
    f"(with `{REPLAYED_HEADER}: true`) and writes nothing. 1-255 characters of "
    "`A-Z a-z 0-9 - _ . : ~ + / =`, optionally in double quotes (a Structured Field string); "
    "scoped to the bearer token when API tokens are configured."
)

#: What a write operation that takes the header documents besides its own answers.
RESPONSES: Responses = {
    200: {
        "description": "Successful Response",
        "headers": {
            REPLAYED_HEADER: {
                "description": "`true` when this is the stored answer to an earlier request "
                "with the same Idempotency-Key (nothing was written this time)",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
    },
    400: error_answer(
        "Invalid Content-Length, a body that is not decodable, or a malformed Idempotency-Key"
    ),
    409: error_answer(
        "A request with the same Idempotency-Key is still being processed",
        Retry_After=RETRY_AFTER,
    ),
    422: {
        "description": "Validation Error, or the Idempotency-Key was used for a different request",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/HTTPValidationError"},
                        {"$ref": "#/components/schemas/ErrorDetail"},
                    ]
                }
            }
        },
    },
}


class KeysInFlight:
    """The keys this worker is processing now."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()

    @contextmanager
    def claim(self, scope: str, key: str) -> Iterator[None]:
        entry = (scope, key)
        if entry in self._keys:
            raise IdempotencyKeyInFlight
        self._keys.add(entry)
        try:
            yield
        finally:
            self._keys.discard(entry)


def parse_key(value: str) -> str:
    if _KEY.fullmatch(value) is None:
        raise IdempotencyKeyInvalid(
            f"{HEADER} must be 1-{KEY_MAX} characters of A-Z a-z 0-9 - _ . : ~ + / =, "
            "optionally in double quotes"
        )
    return value.strip('"')


def token_scope(authorization: str | None) -> str:
    """A digest of the bearer token (already checked by heroes.security): its keys' namespace."""
    _, _, token = (authorization or "").partition(" ")
    return hashlib.sha256(token.strip().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A write request that came with a key: who sent it, what it is, where its answer goes."""

    scope: str
    key: str
    target: str  # method and path: part of the fingerprint
    ttl_s: int
    in_flight: KeysInFlight

    def fingerprint(self, payload: BaseModel | None) -> str:
        digest = hashlib.sha256(self.target.encode())
        if payload is not None:
            # The fields as validated, sorted: the same request however its JSON was spaced.
            fields = payload.model_dump(mode="json", exclude_unset=True)
            digest.update(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()

    async def once(
        self, session: Session, payload: BaseModel | None, write: Callable[..., Awaitable[Any]]
    ) -> Response:
        """``write(answer=...)`` performed once per key: its result as JSON the first time, the
        stored answer for every retry."""
        fingerprint = self.fingerprint(payload)
        now = int(time.time())
        answer = Answer(self.scope, self.key, fingerprint, now + self.ttl_s)
        with self.in_flight.claim(self.scope, self.key):
            for _ in range(2):
                try:
                    return json_response(await write(answer=answer))
                except ValueRejected:
                    # The key has an answer (the write was undone with the refused insert), or
                    # the database refused one of the write's values.
                    earlier = await self._find(session)
                    if earlier is None:
                        raise
                    if earlier["expires_at"] <= now:
                        await answers.forget_expired(
                            session=session, scope=self.scope, key=self.key, now=now
                        )
                        continue  # the key is free again
                    return self._replay(earlier, fingerprint)
                except NotFound:
                    # Nothing to write to: the retry of a DELETE that succeeded gets that answer.
                    earlier = await self._find(session)
                    if earlier is None or earlier["expires_at"] <= now:
                        raise
                    return self._replay(earlier, fingerprint)
        raise IdempotencyKeyInFlight  # its expired answer was replaced meanwhile: try again

    async def _find(self, session: Session) -> Row | None:
        return await answers.find(session=session, scope=self.scope, key=self.key)

    @staticmethod
    def _replay(earlier: Row, fingerprint: str) -> Response:
        if earlier["fingerprint"] != fingerprint:
            raise IdempotencyKeyReused
        return Response(
            earlier["body"].encode(),
            status_code=earlier["status"],
            media_type="application/json",
            headers={REPLAYED_HEADER: "true"},
        )


async def idempotent_request(
    request: Request,
    key: Annotated[str | None, Header(alias=HEADER, description=HEADER_DESCRIPTION)] = None,
) -> IdempotentRequest | None:
    if key is None:
        return None
    if len(request.headers.getlist(HEADER)) > 1:
        raise IdempotencyKeyInvalid(f"send one {HEADER} header, not several")
    settings: Settings = request.app.state.settings
    scope = token_scope(request.headers.get("authorization")) if settings.api_tokens else ""
    return IdempotentRequest(
        scope=scope,
        key=parse_key(key),
        target=f"{request.method} {request.scope['path']}\n",
        ttl_s=settings.idempotency_ttl_s,
        in_flight=request.app.state.keys_in_flight,
    )


IdempotencyDep = Annotated[IdempotentRequest | None, Depends(idempotent_request)]


async def once(
    idempotent: IdempotentRequest | None,
    session: Session,
    payload: BaseModel | None,
    write: Callable[..., Awaitable[Any]],
) -> Response:
    """What a write route applies: ``write`` (its query function, waiting for ``answer=``) run
    as is without a key, or once per key with its answer stored (IdempotentRequest.once)."""
    if idempotent is None:
        return json_response(await write(answer=None))
    return await idempotent.once(session, payload, write)


async def purge_expired(db: Database, now: int) -> int:
    """Delete answers expired at ``now``, a batch per statement; how many were deleted."""
    session = Session(db)
    deleted = 0
    for _ in range(PURGE_MAX_BATCHES):
        count = await answers.purge(session=session, now=now, batch=PURGE_BATCH)
        deleted += count
        if count < PURGE_BATCH:
            break
        await asyncio.sleep(0)  # let requests in between batches
    return deleted


@asynccontextmanager
async def purging(db: Database, interval_s: float) -> AsyncIterator[None]:
    """A background task of the worker purging expired answers every ~``interval_s``."""

    async def loop() -> None:
        while True:
            # Jittered, so the workers of a deployment do not all purge at the same moment.
            await asyncio.sleep(interval_s * random.uniform(0.5, 1.0))  # noqa: S311
            try:
                deleted = await purge_expired(db, int(time.time()))
            except DatabaseUnavailable as exc:
                logger.info("idempotency purge skipped, database unavailable: %s", exc)
                continue
            except Exception:
                logger.exception("idempotency purge failed")
                continue
            if deleted:
                logger.info("purged %d expired idempotency keys", deleted)

    async with background.running(loop(), "idempotency-purge"):
        yield
