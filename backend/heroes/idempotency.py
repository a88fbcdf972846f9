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

The write runs first and its answer is stored after it, in the same transaction: a fresh key,
the common case, costs one statement and BEGIN/COMMIT more than no key. When the key turns out
to be taken, the transaction rolls back (the write with it) and the earlier answer is looked
up instead (on PostgreSQL a rolled-back POST still uses up a sequence number: a gap in the ids).
"In progress" is the open transaction itself: within a worker a set of the keys being
processed answers 409 at once; across workers on PostgreSQL a transaction-scoped advisory lock
per key, taken by the statement that stores the answer (``pg_try_advisory_xact_lock``, never
waited for), does. On SQLite, whose writes run one transaction at a time, a duplicate from
another worker waits for the first and gets its replay. The primary key (scope, key) is the last
guard: a second answer for a key cannot commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel

from heroes import crud
from heroes.config import Settings
from heroes.db import Database, DatabaseUnavailable, Session
from heroes.errors import IdempotencyKeyInFlight, IdempotencyKeyInvalid, IdempotencyKeyReused

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


class InFlight:
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
    in_flight: InFlight

    def fingerprint(self, payload: BaseModel | None) -> str:
        digest = hashlib.sha256(self.target.encode())
        if payload is not None:
            # The fields as validated, sorted: the same request however its JSON was spaced.
            fields = payload.model_dump(mode="json", exclude_unset=True)
            digest.update(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()

    @property
    def lock(self) -> int:
        digest = hashlib.sha256(f"{self.scope}\0{self.key}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    async def once(
        self, session: Session, payload: BaseModel | None, write: Callable[[], Awaitable[Any]]
    ) -> Response:
        fingerprint = self.fingerprint(payload)
        now = int(time.time())
        with self.in_flight.claim(self.scope, self.key):
            # Optimistic: the write, then its answer under the key, in one transaction. A key
            # already taken rolls the write back and the answer is looked up instead. A fresh
            # key, the common case, costs two statements more than no key (BEGIN/COMMIT aside).
            try:
                async with session.transaction():
                    body = orjson.dumps(await write())
                    stored = await crud.store_answer(
                        session=session, scope=self.scope, key=self.key,
                        fingerprint=fingerprint, status=200, body=body.decode(),
                        expires_at=now + self.ttl_s, now=now, lock=self.lock,
                    )  # fmt: skip
                    if not stored:
                        raise _KeyTaken
            except _KeyTaken:
                return await self._earlier_answer(session, fingerprint, now, in_flight=True)
            except Exception:
                # The write failed (404, ...): a retry of a request that succeeded before
                # (DELETE) still gets that answer; anything else fails as it would unkeyed.
                earlier = await self._answer_instead_of_error(session, fingerprint, now)
                if earlier is None:
                    raise
                return earlier
        return Response(body, media_type="application/json")

    async def _answer_instead_of_error(
        self, session: Session, fingerprint: str, now: int
    ) -> Response | None:
        try:
            return await self._earlier_answer(session, fingerprint, now, in_flight=False)
        except IdempotencyKeyReused:
            raise
        except Exception:  # no answer, or the lookup failed too: the write's error stands
            logger.debug("no earlier answer for a failed keyed request", exc_info=True)
            return None

    async def _earlier_answer(
        self, session: Session, fingerprint: str, now: int, *, in_flight: bool
    ) -> Response:
        found = await crud.find_answer(session=session, scope=self.scope, key=self.key)
        if found is None or found["expires_at"] <= now:
            # Taken but not committed: the first request is still being processed.
            raise IdempotencyKeyInFlight if in_flight else _NoAnswer
        if found["fingerprint"] != fingerprint:
            raise IdempotencyKeyReused
        return Response(
            found["body"].encode(),
            status_code=found["status"],
            media_type="application/json",
            headers={REPLAYED_HEADER: "true"},
        )


class _KeyTaken(Exception):
    """The key has an answer or is locked: roll the write back."""


class _NoAnswer(Exception):
    """No earlier answer to give instead of an error."""


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
        in_flight=request.app.state.in_flight,
    )


IdempotencyDep = Annotated[IdempotentRequest | None, Depends(idempotent_request)]


async def respond(
    idempotent: IdempotentRequest | None,
    session: Session,
    payload: BaseModel | None,
    write: Callable[[], Awaitable[Any]],
) -> Response:
    """The route's answer: ``write()``'s result as JSON, once per key when a key was sent."""
    if idempotent is None:
        return Response(orjson.dumps(await write()), media_type="application/json")
    return await idempotent.once(session, payload, write)


async def purge_expired(db: Database, now: int) -> int:
    """Delete answers expired at ``now``, a batch per statement; how many were deleted."""
    session = Session(db)
    deleted = 0
    for _ in range(PURGE_MAX_BATCHES):
        count = await crud.purge_answers(session=session, now=now, batch=PURGE_BATCH)
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

    task = asyncio.get_running_loop().create_task(loop(), name="idempotency-purge")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
