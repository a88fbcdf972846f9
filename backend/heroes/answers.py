"""Answers stored under an ``Idempotency-Key``: the queries of the ``idempotency_key`` table and
``answering``, which a write's query function uses to keep its answer in the write's own
transaction (the rules are heroes.idempotency's).

The stored body is the JSON of what the query function returns, encoded as the routes encode
it (``encode``): the answer sent the first time and the one replayed are the same bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Select, bindparam, delete, insert, select, tuple_
from sqlalchemy.sql.dml import Delete, Insert, ReturningDelete

from heroes.db import Row, Session
from heroes.models import IdempotencyRecord

ANSWER = IdempotencyRecord.__table__  # type: ignore[attr-defined]  # SQLModel sets it

#: The one JSON encoding of the API's bodies (compact, UTF-8, the models' field order).
encode = orjson.dumps


@dataclass(frozen=True, slots=True)
class Answer:
    """Where the answer to a keyed write goes: whose key, which request, until when."""

    scope: str
    key: str
    fingerprint: str
    expires_at: int  # Unix seconds


Store = Callable[[Any], Awaitable[None]]


async def _no_store(_content: Any) -> None:
    return None


@asynccontextmanager
async def answering(session: Session, answer: Answer | None) -> AsyncIterator[Store]:
    """The block of a write's query function. Without an answer, nothing more than the block:
    a single statement runs in autocommit. With one, the block is a transaction and ``store``
    (called with the write's result) inserts the answer in it: both commit or neither. A key
    that already has an answer makes the insert fail (ValueRejected: the primary key), which
    undoes the write too."""
    if answer is None:
        yield _no_store
        return

    async def store(content: Any) -> None:
        params = {**asdict(answer), "status": 200, "body": encode(content).decode()}
        await session.execute(_insert(), params)

    async with session.transaction():
        yield store


@cache
def _insert() -> Insert:
    return insert(ANSWER).values({column.name: bindparam(column.name) for column in ANSWER.c})


@cache
def _select() -> Select[Any]:
    where = (ANSWER.c.scope == bindparam("scope")) & (ANSWER.c.key == bindparam("key"))
    return select(ANSWER.c.fingerprint, ANSWER.c.status, ANSWER.c.body, ANSWER.c.expires_at).where(
        where
    )


@cache
def _forget_expired() -> Delete:
    where = (ANSWER.c.scope == bindparam("scope")) & (ANSWER.c.key == bindparam("key"))
    return delete(ANSWER).where(where & (ANSWER.c.expires_at <= bindparam("now")))


@cache
def _purge() -> ReturningDelete[Any]:
    # A bounded batch per statement (row values IN a LIMITed subquery work on both databases):
    # a short write that never holds locks for long.
    expired = (
        select(ANSWER.c.scope, ANSWER.c.key)
        .where(ANSWER.c.expires_at <= bindparam("now"))
        .offset(bindparam("offset"))  # 0: SQLite renders a LIMIT alone with an OFFSET literal
        .limit(bindparam("batch"))
    )
    return (
        delete(ANSWER)
        .where(tuple_(ANSWER.c.scope, ANSWER.c.key).in_(expired))
        .returning(ANSWER.c.expires_at)
    )


async def find(*, session: Session, scope: str, key: str) -> Row | None:
    return await session.fetch_one(_select(), {"scope": scope, "key": key})


async def forget_expired(*, session: Session, scope: str, key: str, now: int) -> None:
    await session.execute(_forget_expired(), {"scope": scope, "key": key, "now": now})


async def purge(*, session: Session, now: int, batch: int) -> int:
    """Delete up to ``batch`` answers expired at ``now``; how many were deleted."""
    return len(await session.fetch_all(_purge(), {"now": now, "offset": 0, "batch": batch}))
