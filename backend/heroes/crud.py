"""Every query of the service: keyword-only functions that raise domain errors.

Each is one SQL statement, a Core expression over the SQLModel table. Every statement is built
once (``functools.cache``) and is its own key in the database's compiled-SQL cache. Only the
public columns (id, name, age) are ever selected or returned, so ``secret_name`` cannot leak.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, delete, insert, select, update
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate

from heroes.db import Row, Session
from heroes.errors import HeroNotFound
from heroes.models import INT32_MAX, Hero, HeroCreate, HeroUpdate

HERO = Hero.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
PUBLIC = (HERO.c.id, HERO.c.name, HERO.c.age)

PublicHero = dict[str, Any]


def public(row: Row) -> PublicHero:
    """The one place a row becomes a HeroPublic body (the field order of the tutorial's)."""
    return {"name": row["name"], "age": row["age"], "id": row["id"]}


@cache
def _select_one() -> Select[Any]:
    return select(*PUBLIC).where(HERO.c.id == bindparam("hero_id"))


@cache
def _select_page(by_name: bool, by_age_min: bool, by_age_max: bool) -> Select[Any]:
    # Ordered by id so that pages are stable: the tutorial's unordered query is not on
    # PostgreSQL. One statement per combination of filters, so that each can use its index.
    query = select(*PUBLIC)
    if by_name:
        query = query.where(HERO.c.name == bindparam("name"))
    if by_age_min:
        query = query.where(HERO.c.age >= bindparam("age_min"))
    if by_age_max:
        query = query.where(HERO.c.age <= bindparam("age_max"))
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
) -> list[PublicHero]:
    statement = _select_page(name is not None, age_min is not None, age_max is not None)
    params = {"offset": offset, "limit": limit, "name": name}
    params.update(age_min=age_min, age_max=age_max)
    return [public(row) for row in await session.fetch_all(statement, params)]


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
