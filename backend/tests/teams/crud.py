"""The team queries (as heroes/domain/crud.py): one Core statement each, built once, only the public
columns returned."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, delete, insert, select, update
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate

from heroes.db import Row, Session
from heroes.domain.models import INT32_MAX
from heroes.errors import NotFound

from .models import Team, TeamCreate, TeamPublic, TeamUpdate

TEAM = Team.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
FIELDS = tuple(TeamPublic.model_fields)
PUBLIC = tuple(TEAM.c[name] for name in FIELDS)
DELETED = {"ok": True}

PublicTeam = dict[str, Any]


def public(row: Row) -> PublicTeam:
    return {name: row[name] for name in FIELDS}


def not_found() -> NotFound:
    return NotFound("Team")


@cache
def _select_one() -> Select[Any]:
    return select(*PUBLIC).where(TEAM.c.id == bindparam("team_id"))


@cache
def _select_page() -> Select[Any]:
    return select(*PUBLIC).order_by(TEAM.c.id).offset(bindparam("offset")).limit(bindparam("limit"))


@cache
def _insert() -> ReturningInsert[Any]:
    values: dict[str, Any] = {"name": bindparam("name"), "headquarters": bindparam("headquarters")}
    return insert(TEAM).values(values).returning(*PUBLIC)


@cache
def _update(columns: tuple[str, ...]) -> ReturningUpdate[Any]:
    values: dict[str, Any] = {column: bindparam(f"new_{column}") for column in columns}
    return update(TEAM).where(TEAM.c.id == bindparam("team_id")).values(values).returning(*PUBLIC)


@cache
def _delete() -> ReturningDelete[Any]:
    return delete(TEAM).where(TEAM.c.id == bindparam("team_id")).returning(TEAM.c.id)


def _known_id(team_id: int) -> int:
    if not 1 <= team_id <= INT32_MAX:
        raise not_found()
    return team_id


async def create_team(*, session: Session, team_in: TeamCreate) -> PublicTeam:
    params = {"name": team_in.name, "headquarters": team_in.headquarters}
    row = await session.fetch_one(_insert(), params)
    assert row is not None
    return public(row)


async def list_teams(*, session: Session, offset: int, limit: int) -> list[PublicTeam]:
    rows = await session.fetch_all(_select_page(), {"offset": offset, "limit": limit})
    return [public(row) for row in rows]


async def get_team(*, session: Session, team_id: int) -> PublicTeam:
    row = await session.fetch_one(_select_one(), {"team_id": _known_id(team_id)})
    if row is None:
        raise not_found()
    return public(row)


async def update_team(*, session: Session, team_id: int, team_in: TeamUpdate) -> PublicTeam:
    changes = team_in.model_dump(exclude_unset=True)
    if not changes:
        return await get_team(session=session, team_id=team_id)
    columns = tuple(sorted(changes))
    params = {f"new_{column}": changes[column] for column in columns}
    params["team_id"] = _known_id(team_id)
    row = await session.fetch_one(_update(columns), params)
    if row is None:
        raise not_found()
    return public(row)


async def delete_team(*, session: Session, team_id: int) -> dict[str, bool]:
    if await session.fetch_one(_delete(), {"team_id": _known_id(team_id)}) is None:
        raise not_found()
    return DELETED
