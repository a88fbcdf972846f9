"""The hero queries: keyword-only functions that raise domain errors.

Each is one SQL statement, a Core expression over the SQLModel table. Every statement is built
once (``functools.cache``) and is its own key in the database's compiled-SQL cache. Only the
columns of ``HeroPublic`` are ever selected or returned, so ``secret_name`` cannot leak. A write
runs in the caller's transaction when there is one (heroes.domain.idempotency), else on its own.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, delete, insert, select, update
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate

from heroes.db import Row, Session
from heroes.domain.models import INT32_MAX, Hero, HeroCreate, HeroPublic, HeroUpdate
from heroes.errors import NotFound

HERO = Hero.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
#: The public shape of a hero, from its one definition (HeroPublic): field names and order.
FIELDS = tuple(HeroPublic.model_fields)
PUBLIC = tuple(HERO.c[name] for name in FIELDS)
#: What a delete answers (the tutorial's body).
DELETED = {"ok": True}

PublicHero = dict[str, Any]


class HeroPage(NamedTuple):
    heroes: list[PublicHero]
    more: bool  # rows exist after the last of ``heroes``


def public(row: Row) -> PublicHero:
    """A row as a HeroPublic body: its fields, in its order."""
    return {name: row[name] for name in FIELDS}


def not_found() -> NotFound:
    return NotFound("Hero")


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
        raise not_found()
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
        raise not_found()
    return public(row)


async def update_hero(*, session: Session, hero_id: int, hero_in: HeroUpdate) -> PublicHero:
    """Change the fields sent. Nothing sent: nothing written, the hero read."""
    changes = hero_in.model_dump(exclude_unset=True)
    if not changes:
        return await get_hero(session=session, hero_id=hero_id)
    columns = tuple(sorted(changes))
    params = {f"new_{column}": changes[column] for column in columns}
    params["hero_id"] = _known_id(hero_id)
    row = await session.fetch_one(_update(columns), params)
    if row is None:
        raise not_found()
    return public(row)


async def delete_hero(*, session: Session, hero_id: int) -> dict[str, bool]:
    if await session.fetch_one(_delete(), {"hero_id": _known_id(hero_id)}) is None:
        raise not_found()
    return DELETED
