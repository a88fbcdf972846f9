"""Every query of the service: keyword-only functions that raise domain errors."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heroes.errors import HeroNotFound
from heroes.models import INT32_MAX, Hero, HeroCreate, HeroUpdate


async def create_hero(*, session: AsyncSession, hero_in: HeroCreate) -> Hero:
    hero = Hero.model_validate(hero_in)
    session.add(hero)
    await session.flush()
    return hero


async def list_heroes(
    *,
    session: AsyncSession,
    offset: int,
    limit: int,
    name: str | None = None,
    age_min: int | None = None,
    age_max: int | None = None,
) -> Sequence[Hero]:
    # Ordered by id so that pages are stable: the tutorial's unordered query is not on PostgreSQL.
    query = select(Hero).order_by(col(Hero.id)).offset(offset).limit(limit)
    if name is not None:
        query = query.where(Hero.name == name)
    if age_min is not None:
        query = query.where(col(Hero.age) >= age_min)
    if age_max is not None:
        query = query.where(col(Hero.age) <= age_max)
    return (await session.exec(query)).all()


async def get_hero(*, session: AsyncSession, hero_id: int) -> Hero:
    # An id outside the column's range cannot exist; asking the database would overflow on SQLite.
    if not 1 <= hero_id <= INT32_MAX:
        raise HeroNotFound
    hero = await session.get(Hero, hero_id)
    if hero is None:
        raise HeroNotFound
    return hero


async def update_hero(*, session: AsyncSession, hero_id: int, hero_in: HeroUpdate) -> Hero:
    hero = await get_hero(session=session, hero_id=hero_id)
    hero.sqlmodel_update(hero_in.model_dump(exclude_unset=True))
    session.add(hero)
    await session.flush()
    return hero


async def delete_hero(*, session: AsyncSession, hero_id: int) -> None:
    hero = await get_hero(session=session, hero_id=hero_id)
    await session.delete(hero)
    await session.flush()
