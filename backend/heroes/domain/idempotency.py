"""Idempotency keys: a write sent with a key is performed once, and its response stored with the
key (table ``idempotency_key``) is replayed to every retry. The HTTP side (the header, the
``Idempotent-Replayed`` answer) is heroes.api.idempotency; the rules are in docs/api-clients.md.

A keyed write is one unit of work (``once``): open the transaction, claim the key, run the
ordinary query function, store its response, commit. The claim is one statement that decides
"first time" against "already answered": a key some other request holds is waited for (its row
lock) and then read. The query function cannot tell a keyed write from a plain one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import Select, Update, bindparam, delete, literal_column, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert

from heroes.db import Database, Session
from heroes.domain.models import IdempotencyKey
from heroes.errors import DatabaseUnavailable, IdempotencyKeyInFlight, IdempotencyKeyReused

logger = logging.getLogger("heroes.idempotency")

KEY = IdempotencyKey.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
#: Rows deleted per purge statement, and statements per purge run (the rest waits for the next).
PURGE_BATCH = 500
PURGE_MAX_BATCHES = 100

#: The one JSON encoding of the API's bodies (compact, UTF-8, the models' field order): a
#: response sent the first time and the one replayed are the same bytes.
encode = orjson.dumps


class KeysInFlight:
    """The keys this worker is processing now: a retry that overtakes its first request in the
    same worker is answered 409 at once instead of waiting for it."""

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


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A write request that came with a key: whose key (``scope``: a digest of the caller's
    token, or empty), which key, what it asks (``target``: method and path), and the keys its
    worker is processing."""

    scope: str
    key: str
    target: str
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
    *,
    session: Session,
    request: IdempotentRequest,
    payload: BaseModel | None,
    write: Callable[[], Awaitable[Any]],
) -> tuple[bytes, bool]:
    """``write()`` performed once per key, in one transaction with its stored response: the
    response body, and whether it is the replay of an earlier request's."""
    fingerprint = request.fingerprint(payload)
    with request.in_flight.claim(request.scope, request.key):
        async with session.transaction():
            now = int(time.time())
            params = {"scope": request.scope, "key": request.key}
            claim = {**params, "fingerprint": fingerprint, "expires_at": now + request.ttl_s}
            claimed = await session.fetch_one(
                _claim(session.db.dialect.name), {**claim, "now": now}
            )
            if claimed is None:  # answered before, and not expired: a replay or a conflict
                stored = await session.fetch_one(_select(), params)
                if stored is None:  # purged in between: the key is free, the client retries
                    raise IdempotencyKeyInFlight
                if stored["fingerprint"] != fingerprint:
                    raise IdempotencyKeyReused
                return stored["body"].encode(), True
            body = encode(await write())
            await session.execute(_store(), {**params, "status": 200, "body": body.decode()})
    return body, False


@cache
def _claim(dialect: str) -> ReturningInsert[Any]:
    # INSERT ... ON CONFLICT DO UPDATE ... WHERE expired: a row comes back when the key is new
    # or its stored response has expired (taken over), none when a live one exists. The row is
    # written complete only by _store, in the same transaction: no one else ever sees it half.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    claim = insert(KEY).values(
        scope=bindparam("scope"),
        key=bindparam("key"),
        fingerprint=bindparam("fingerprint"),
        status=literal_column("0"),
        body=literal_column("''"),
        expires_at=bindparam("expires_at"),
    )
    taken_over = ("fingerprint", "status", "body", "expires_at")
    return claim.on_conflict_do_update(
        index_elements=[KEY.c.scope, KEY.c.key],
        set_={name: claim.excluded[name] for name in taken_over},
        where=KEY.c.expires_at <= bindparam("now"),
    ).returning(KEY.c.key)


def _this_key() -> Any:
    return (KEY.c.scope == bindparam("scope")) & (KEY.c.key == bindparam("key"))


@cache
def _select() -> Select[Any]:
    return select(KEY.c.fingerprint, KEY.c.status, KEY.c.body).where(_this_key())


@cache
def _store() -> Update:
    values: dict[str, Any] = {"status": bindparam("status"), "body": bindparam("body")}
    return update(KEY).where(_this_key()).values(values)


@cache
def _purge() -> ReturningDelete[Any]:
    # A bounded batch per statement (row values IN a LIMITed subquery work on both databases):
    # a short write that never holds locks for long.
    expired = (
        select(KEY.c.scope, KEY.c.key)
        .where(KEY.c.expires_at <= bindparam("now"))
        .offset(bindparam("offset"))  # 0: SQLite renders a LIMIT alone with an OFFSET literal
        .limit(bindparam("batch"))
    )
    return (
        delete(KEY).where(tuple_(KEY.c.scope, KEY.c.key).in_(expired)).returning(KEY.c.expires_at)
    )


async def purge_expired(db: Database, now: int) -> int:
    """Delete keys expired at ``now``, a batch per statement; how many were deleted."""
    session = Session(db)
    deleted = 0
    for _ in range(PURGE_MAX_BATCHES):
        params = {"now": now, "offset": 0, "batch": PURGE_BATCH}
        count = len(await session.fetch_all(_purge(), params))
        deleted += count
        if count < PURGE_BATCH:
            break
        await asyncio.sleep(0)  # let requests in between batches
    return deleted


async def purge_forever(db: Database, interval_s: float) -> None:
    """Purge expired keys every ~``interval_s`` (a background task of each worker)."""
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
