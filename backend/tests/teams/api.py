"""The team routes (as heroes/api/heroes.py): an APIRouter built per app, thin routes."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from heroes.api.deps import IdempotencyDep, SessionDep
from heroes.api.idempotency import RESPONSES as IDEMPOTENT
from heroes.api.idempotency import once
from heroes.api.responses import COMMON, json_response, not_found
from heroes.api.security import protection
from heroes.config import Settings

from . import crud
from .models import TeamCreate, TeamPublic, TeamUpdate

NOT_FOUND = not_found("Team")


def router(settings: Settings) -> APIRouter:
    """The team routes; reads and writes protected as the heroes' are."""
    reads = protection(settings, writes=False)
    writes = protection(settings, writes=True)
    router = APIRouter(prefix="/teams", tags=["teams"], responses=COMMON)

    @router.get(
        "/",
        response_model=list[TeamPublic],
        responses=reads.responses,
        dependencies=reads.dependencies,
    )
    async def read_teams(
        session: SessionDep,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
    ) -> Response:
        """List teams ordered by id."""
        return json_response(await crud.list_teams(session=session, offset=offset, limit=limit))

    @router.get(
        "/{team_id}",
        response_model=TeamPublic,
        responses=NOT_FOUND | reads.responses,
        dependencies=reads.dependencies,
    )
    async def read_team(team_id: int, session: SessionDep) -> Response:
        """Read one team."""
        return json_response(await crud.get_team(session=session, team_id=team_id))

    @router.post(
        "/",
        response_model=TeamPublic,
        responses=IDEMPOTENT | writes.responses,
        dependencies=writes.dependencies,
    )
    async def create_team(team: TeamCreate, session: SessionDep, key: IdempotencyDep) -> Response:
        """Create a team. Safe to retry with an Idempotency-Key."""
        create = partial(crud.create_team, session=session, team_in=team)
        return await once(key, session, team, create)

    @router.patch(
        "/{team_id}",
        response_model=TeamPublic,
        responses=NOT_FOUND | IDEMPOTENT | writes.responses,
        dependencies=writes.dependencies,
    )
    async def update_team(
        team_id: int, team: TeamUpdate, session: SessionDep, key: IdempotencyDep
    ) -> Response:
        """Change the fields that are sent."""
        update = partial(crud.update_team, session=session, team_id=team_id, team_in=team)
        return await once(key, session, team, update)

    @router.delete(
        "/{team_id}",
        response_model=dict[str, bool],
        responses=NOT_FOUND | IDEMPOTENT | writes.responses,
        dependencies=writes.dependencies,
    )
    async def delete_team(team_id: int, session: SessionDep, key: IdempotencyDep) -> Response:
        """Delete a team."""
        delete = partial(crud.delete_team, session=session, team_id=team_id)
        return await once(key, session, None, delete)

    return router
