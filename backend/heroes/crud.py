"""Every query of the service: keyword-only functions that raise domain errors.

Each is one SQL statement, a Core expression over the SQLModel table. Every statement is built
once (``functools.cache``) and is its own key in the database's compiled-SQL cache. Only the
public columns (id, name, age) are ever selected or returned, so ``secret_name`` cannot leak.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    BigInteger,
    Select,
    String,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql.dml import Delete, Insert, ReturningDelete, ReturningInsert, ReturningUpdate

from heroes.db import Row, Session
from heroes.errors import HeroNotFound
from heroes.models import INT32_MAX, Hero, HeroCreate, HeroUpdate, IdempotencyRecord

OK_JSON = '{"ok":true}'
HERO = Hero.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
PUBLIC = (HERO.c.id, HERO.c.name, HERO.c.age)
ANSWER = IdempotencyRecord.__table__  # type: ignore[attr-defined]

PublicHero = dict[str, Any]


class HeroPage(NamedTuple):
    heroes: list[PublicHero]
    more: bool  # rows exist after the last of ``heroes``


def public(row: Row) -> PublicHero:
    """The one place a row becomes a HeroPublic body (the field order of the tutorial's)."""
    return {"name": row["name"], "age": row["age"], "id": row["id"]}


@cache
def _select_one() -> Select[Any]:
    return select(*PUBLIC).where(HERO.c.id == bindparam("hero_id"))


@cache
def _select_page(by_name: bool, by_age_min: bool, by_age_max: bool, by_cursor: bool) -> Select[Any]:
    # Ordered by id so that pages are stable: the tutorial's unordered query is not on
    # PostgreSQL. One statement per combination of filters, so that each can use its index.
    # A cursor page starts after an id (keyset: found through the primary key, however deep),
    # an offset page after skipping rows.
    query = select(*PUBLIC)
    if by_name:
        query = query.where(HERO.c.name == bindparam("name"))
    if by_age_min:
        query = query.where(HERO.c.age >= bindparam("age_min"))
    if by_age_max:
        query = query.where(HERO.c.age <= bindparam("age_max"))
    if by_cursor:
        query = query.where(HERO.c.id > bindparam("after"))
    # OFFSET always (0 on a cursor page): SQLite renders a LIMIT alone with an OFFSET literal.
    return query.order_by(HERO.c.id).offset(bindparam("offset")).limit(bindparam("limit"))


@cache
def _insert() -> ReturningInsert[Any]:
    return (
        insert(HERO)
        .values(name=bindparam("name"), age=bindparam("age"), secret_name=bindparam("secret_name"))
        .returning(*PUBLIC)
    )


@cache
def _update(columns: tuple[str, ...]) -> ReturningUpdate[Any]:
    # One UPDATE ... RETURNING: atomic, and no row when the hero does not exist.
    values: dict[str, Any] = {column: bindparam(f"new_{column}") for column in columns}
    return update(HERO).where(HERO.c.id == bindparam("hero_id")).values(values).returning(*PUBLIC)


@cache
def _delete() -> ReturningDelete[Any]:
    return delete(HERO).where(HERO.c.id == bindparam("hero_id")).returning(HERO.c.id)


def _known_id(hero_id: int) -> int:
    # An id outside the column's range cannot exist; asking the database would overflow.
    if not 1 <= hero_id <= INT32_MAX:
        raise HeroNotFound
    return hero_id


class Write(NamedTuple):
    """A write statement with its parameters, and what its answer is: the hero it returns
    (``HERO_BODY``) or ``{"ok": true}`` (``OK_BODY``)."""

    statement: ReturningInsert[Any] | ReturningUpdate[Any] | ReturningDelete[Any]
    params: dict[str, Any]
    body: str


HERO_BODY, OK_BODY = "hero", "ok"


def create_write(hero_in: HeroCreate) -> Write:
    params = {"name": hero_in.name, "age": hero_in.age, "secret_name": hero_in.secret_name}
    return Write(_insert(), params, HERO_BODY)


def update_write(hero_id: int, hero_in: HeroUpdate) -> Write | None:
    """None when nothing is to change (the answer is then a read)."""
    changes = hero_in.model_dump(exclude_unset=True)
    if not changes:
        return None
    columns = tuple(sorted(changes))
    params = {f"new_{column}": changes[column] for column in columns}
    params["hero_id"] = _known_id(hero_id)
    return Write(_update(columns), params, HERO_BODY)


def delete_write(hero_id: int) -> Write:
    return Write(_delete(), {"hero_id": _known_id(hero_id)}, OK_BODY)


async def create_hero(*, session: Session, hero_in: HeroCreate) -> PublicHero:
    write = create_write(hero_in)
    row = await session.fetch_one(write.statement, write.params)
    assert row is not None  # INSERT ... RETURNING always returns the new row
    return public(row)


async def list_heroes(
    *,
    session: Session,
    offset: int,
    limit: int,
    name: str | None = None,
    age_min: int | None = None,
    age_max: int | None = None,
    after: int | None = None,
) -> HeroPage:
    """Up to ``limit`` heroes after ``offset`` rows, or after the id ``after`` when given."""
    statement = _select_page(
        name is not None, age_min is not None, age_max is not None, after is not None
    )
    # One row more than the page: whether it comes back says whether there is a next page.
    params = {"offset": offset, "limit": limit + 1, "name": name, "after": after}
    params.update(age_min=age_min, age_max=age_max)
    rows = await session.fetch_all(statement, params)
    return HeroPage([public(row) for row in rows[:limit]], len(rows) > limit)


async def get_hero(*, session: Session, hero_id: int) -> PublicHero:
    row = await session.fetch_one(_select_one(), {"hero_id": _known_id(hero_id)})
    if row is None:
        raise HeroNotFound
    return public(row)


async def update_hero(*, session: Session, hero_id: int, hero_in: HeroUpdate) -> PublicHero:
    write = update_write(hero_id, hero_in)
    if write is None:
        return await get_hero(session=session, hero_id=hero_id)
    row = await session.fetch_one(write.statement, write.params)
    if row is None:
        raise HeroNotFound
    return public(row)


async def delete_hero(*, session: Session, hero_id: int) -> None:
    write = delete_write(hero_id)
    if await session.fetch_one(write.statement, write.params) is None:
        raise HeroNotFound


# --- answers stored under an Idempotency-Key (rules in heroes.idempotency) ---------------------


@cache
def _select_answer() -> Select[Any]:
    where = (ANSWER.c.scope == bindparam("scope")) & (ANSWER.c.key == bindparam("key"))
    return select(ANSWER.c.fingerprint, ANSWER.c.status, ANSWER.c.body, ANSWER.c.expires_at).where(
        where
    )


ANSWER_PARAMS = ("scope", "key", "fingerprint", "expires_at")


def _answer_values() -> dict[str, Any]:
    return {
        "scope": bindparam("scope", type_=String), "key": bindparam("key", type_=String),
        "fingerprint": bindparam("fingerprint", type_=String), "status": literal_column("200"),
    }  # fmt: skip


@cache
def _insert_answer() -> Insert:
    values = _answer_values()
    values.update(body=bindparam("body", type_=Text), expires_at=bindparam("expires_at"))
    return insert(ANSWER).values(values)


@cache
def _write_and_answer(
    write: ReturningInsert[Any] | ReturningUpdate[Any] | ReturningDelete[Any], body: str
) -> ReturningInsert[Any]:
    """PostgreSQL: the write and its answer in one statement (a data-modifying WITH), atomic
    in autocommit and one round trip. The body is rendered by the database, so the answer sent
    the first time is the stored text itself. The write's RETURNING row is what it renders;
    none (no such hero) stores nothing."""
    written = write.cte("written")
    if body == HERO_BODY:
        # Compact and in the tutorial's field order, like the answers without a key (orjson).
        rendered: Any = func.concat(
            literal_column("""'{"name":'"""), func.to_json(written.c.name),
            literal_column("""',"age":'"""),
            func.coalesce(cast(func.to_json(written.c.age), Text), literal_column("'null'")),
            literal_column("""',"id":'"""), written.c.id, literal_column("'}'"),
        )  # fmt: skip
    else:
        rendered = literal_column(f"'{OK_JSON}'")
    values = _answer_values()
    values.update(body=rendered, expires_at=bindparam("expires_at", type_=BigInteger))
    source = select(*values.values()).select_from(written)
    return (
        insert(ANSWER).from_select(list(values), source).add_cte(written).returning(ANSWER.c.body)
    )


@cache
def _forget_expired_answer() -> Delete:
    where = (ANSWER.c.scope == bindparam("scope")) & (ANSWER.c.key == bindparam("key"))
    return delete(ANSWER).where(where & (ANSWER.c.expires_at <= bindparam("now")))


@cache
def _purge_answers() -> ReturningDelete[Any]:
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


async def find_answer(*, session: Session, scope: str, key: str) -> Row | None:
    return await session.fetch_one(_select_answer(), {"scope": scope, "key": key})


async def write_answered(
    *, session: Session, write: Write, scope: str, key: str, fingerprint: str, expires_at: int
) -> str | None:
    """Run ``write`` and store its answer under the key, atomically; the answer's body, or None
    when the write found no hero. ValueRejected when the key already has an answer (the primary
    key refuses a second one, and the write is undone with it)."""
    answer = {"scope": scope, "key": key, "fingerprint": fingerprint, "expires_at": expires_at}
    if session.db.dialect.name == "postgresql":
        statement = _write_and_answer(write.statement, write.body)
        row = await session.fetch_one(statement, {**write.params, **answer})
        return None if row is None else str(row["body"])
    # SQLite has no data-modifying WITH: a transaction (BEGIN IMMEDIATE), rendered here.
    async with session.transaction():
        written = await session.fetch_one(write.statement, write.params)
        if written is None:
            return None
        body = orjson.dumps(public(written)).decode() if write.body == HERO_BODY else OK_JSON
        await session.execute(_insert_answer(), {**answer, "body": body})
    return body


async def forget_expired_answer(*, session: Session, scope: str, key: str, now: int) -> None:
    await session.execute(_forget_expired_answer(), {"scope": scope, "key": key, "now": now})


async def purge_answers(*, session: Session, now: int, batch: int) -> int:
    """Delete up to ``batch`` answers expired at ``now``; how many were deleted."""
    return len(await session.fetch_all(_purge_answers(), {"now": now, "offset": 0, "batch": batch}))
