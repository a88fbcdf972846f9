"""Every query of the service: keyword-only functions that raise domain errors.

Each is one SQL statement, a Core expression over the SQLModel table. Every statement is built
once (``functools.cache``) and is its own key in the database's compiled-SQL cache. Only the
public columns (id, name, age) are ever selected or returned, so ``secret_name`` cannot leak.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate
from sqlalchemy.sql.elements import BindParameter

from heroes.db import Row, Session
from heroes.errors import HeroNotFound
from heroes.models import INT32_MAX, Hero, HeroCreate, HeroUpdate, IdempotencyRecord

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


async def create_hero(*, session: Session, hero_in: HeroCreate) -> PublicHero:
    params = {"name": hero_in.name, "age": hero_in.age, "secret_name": hero_in.secret_name}
    row = await session.fetch_one(_insert(), params)
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
    changes = hero_in.model_dump(exclude_unset=True)
    if not changes:
        return await get_hero(session=session, hero_id=hero_id)
    columns = tuple(sorted(changes))
    params = {f"new_{column}": changes[column] for column in columns}
    params["hero_id"] = _known_id(hero_id)
    row = await session.fetch_one(_update(columns), params)
    if row is None:
        raise HeroNotFound
    return public(row)


async def delete_hero(*, session: Session, hero_id: int) -> None:
    row = await session.fetch_one(_delete(), {"hero_id": _known_id(hero_id)})
    if row is None:
        raise HeroNotFound


# --- answers stored under an Idempotency-Key (rules in heroes.idempotency) ---------------------


@cache
def _select_answer() -> Select[Any]:
    where = (ANSWER.c.scope == bindparam("scope")) & (ANSWER.c.key == bindparam("key"))
    return select(ANSWER.c.fingerprint, ANSWER.c.status, ANSWER.c.body, ANSWER.c.expires_at).where(
        where
    )


@cache
def _store_answer(dialect: str) -> ReturningInsert[Any]:
    """INSERT the answer, or replace an expired one; no row back when the key is taken: an
    answer that has not expired, or (PostgreSQL) another transaction holding the key's lock."""
    values: dict[str, BindParameter[Any]] = {
        "scope": bindparam("scope", type_=String), "key": bindparam("key", type_=String),
        "fingerprint": bindparam("fingerprint", type_=String),
        "status": bindparam("status", type_=Integer), "body": bindparam("body", type_=Text),
        "expires_at": bindparam("expires_at", type_=BigInteger),
    }  # fmt: skip
    statement: Any
    if dialect == "postgresql":
        # The lock is transaction-scoped and never waited for: a duplicate running in another
        # worker gets no row (409) instead of queueing behind the first; COMMIT or ROLLBACK
        # release it, also when the process dies.
        source = select(*values.values()).where(
            func.pg_try_advisory_xact_lock(bindparam("lock", type_=BigInteger))
        )
        statement = postgresql.insert(ANSWER).from_select(list(values), source)
    else:
        statement = sqlite.insert(ANSWER).values(values)
    replaced = {name: statement.excluded[name] for name in values if name not in ("scope", "key")}
    return cast(
        ReturningInsert[Any],
        statement.on_conflict_do_update(
            index_elements=[ANSWER.c.scope, ANSWER.c.key],
            set_=replaced,
            where=ANSWER.c.expires_at <= bindparam("now"),
        ).returning(ANSWER.c.expires_at),
    )


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


async def store_answer(
    *,
    session: Session,
    scope: str,
    key: str,
    fingerprint: str,
    status: int,
    body: str,
    expires_at: int,
    now: int,
    lock: int,
) -> bool:
    """Store the answer under the key; False when the key is taken (see _store_answer)."""
    params: dict[str, Any] = {"scope": scope, "key": key, "fingerprint": fingerprint}
    params.update(status=status, body=body, expires_at=expires_at, now=now, lock=lock)
    row = await session.fetch_one(_store_answer(session.db.dialect.name), params)
    return row is not None


async def purge_answers(*, session: Session, now: int, batch: int) -> int:
    """Delete up to ``batch`` answers expired at ``now``; how many were deleted."""
    return len(await session.fetch_all(_purge_answers(), {"now": now, "offset": 0, "batch": batch}))
