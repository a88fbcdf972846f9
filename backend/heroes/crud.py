"""Every query of the service: keyword-only functions that raise domain errors.

Each is one SQL statement built from the SQLModel table and compiled once per dialect. Only the
public columns (id, name, age) are ever selected or returned, so ``secret_name`` cannot leak.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, delete, insert, select, update

from heroes.db import Row, Session
from heroes.errors import HeroNotFound
from heroes.models import INT32_MAX, Hero, HeroCreate, HeroUpdate

HERO = Hero.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
PUBLIC = (HERO.c.id, HERO.c.name, HERO.c.age)

PublicHero = dict[str, Any]


def public(row: Row) -> PublicHero:
    return {"name": row[1], "age": row[2], "id": row[0]}


def _select_one() -> Select[Any]:
    return select(*PUBLIC).where(HERO.c.id == bindparam("hero_id"))


def _insert() -> Any:
    return (
        insert(HERO)
        .values(name=bindparam("name"), age=bindparam("age"), secret_name=bindparam("secret_name"))
        .returning(*PUBLIC)
    )


def _delete() -> Any:
    return delete(HERO).where(HERO.c.id == bindparam("hero_id")).returning(HERO.c.id)


async def create_hero(*, session: Session, hero_in: HeroCreate) -> PublicHero:
    row = await session.fetch_one(
        session.db.sql("insert", _insert),
        {"name": hero_in.name, "age": hero_in.age, "secret_name": hero_in.secret_name},
    )
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
    filters = (name is not None, age_min is not None, age_max is not None)

    def build() -> Select[Any]:
        # Ordered by id so that pages are stable: the tutorial's unordered query is not on
        # PostgreSQL. One compiled statement per combination of filters, so each uses its index.
        query = select(*PUBLIC)
        if filters[0]:
            query = query.where(HERO.c.name == bindparam("name"))
        if filters[1]:
            query = query.where(HERO.c.age >= bindparam("age_min"))
        if filters[2]:
            query = query.where(HERO.c.age <= bindparam("age_max"))
        return query.order_by(HERO.c.id).offset(bindparam("offset")).limit(bindparam("limit"))

    params = {"offset": offset, "limit": limit, "name": name}
    params.update(age_min=age_min, age_max=age_max)
    rows = await session.fetch_all(session.db.sql(("list", filters), build), params)
    return [public(row) for row in rows]


def _known_id(hero_id: int) -> int:
    # An id outside the column's range cannot exist; asking the database would overflow.
    if not 1 <= hero_id <= INT32_MAX:
        raise HeroNotFound
    return hero_id


async def get_hero(*, session: Session, hero_id: int) -> PublicHero:
    row = await session.fetch_one(
        session.db.sql("get", _select_one), {"hero_id": _known_id(hero_id)}
    )
    if row is None:
        raise HeroNotFound
    return public(row)


async def update_hero(*, session: Session, hero_id: int, hero_in: HeroUpdate) -> PublicHero:
    changes = hero_in.model_dump(exclude_unset=True)
    if not changes:
        return await get_hero(session=session, hero_id=hero_id)
    columns = tuple(sorted(changes))

    def build() -> Any:
        # One UPDATE ... RETURNING: atomic, and 404 when no row matched.
        values: dict[str, Any] = {column: bindparam(f"new_{column}") for column in columns}
        return (
            update(HERO).where(HERO.c.id == bindparam("hero_id")).values(values).returning(*PUBLIC)
        )

    params = {f"new_{column}": changes[column] for column in columns}
    params["hero_id"] = _known_id(hero_id)
    row = await session.fetch_one(session.db.sql(("update", columns), build), params)
    if row is None:
        raise HeroNotFound
    return public(row)


async def delete_hero(*, session: Session, hero_id: int) -> None:
    row = await session.fetch_one(
        session.db.sql("delete", _delete), {"hero_id": _known_id(hero_id)}
    )
    if row is None:
        raise HeroNotFound
