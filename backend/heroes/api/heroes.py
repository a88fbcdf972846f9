"""The hero routes: thin, the queries live in heroes.domain.crud.

The query functions return exactly the fields of ``HeroPublic`` (the ``response_model``), which
the routes send as JSON; backend/tests/test_openapi_conformance.py proves every body matches
the declared model.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from heroes.api.deps import IdempotencyDep, SessionDep
from heroes.api.idempotency import RESPONSES as IDEMPOTENT
from heroes.api.idempotency import once
from heroes.api.responses import COMMON, PAGED, json_response, not_found
from heroes.api.security import protection
from heroes.config import Settings
from heroes.domain import crud
from heroes.domain.models import (
    INT32_MAX,
    INT64_MAX,
    TEXT_MAX,
    HeroCreate,
    HeroPublic,
    HeroUpdate,
    StorableText,
)
from heroes.domain.pagination import decode_cursor, next_link
from heroes.errors import CursorInvalid

NOT_FOUND = not_found("Hero")
CURSOR_DESCRIPTION = (
    "Opaque: the `cursor` of the previous page's `Link` header. Continues after that page "
    "(keyset on id: as fast at the end as at the start). Not combined with `offset`."
)


def router(settings: Settings) -> APIRouter:
    """The hero routes. Built per app: whether reads or writes need a bearer token is a setting
    (heroes.api.security), and an unprotected route gets no dependency at all."""
    reads = protection(settings, writes=False)
    writes = protection(settings, writes=True)
    router = APIRouter(prefix="/heroes", tags=["heroes"], responses=COMMON)

    @router.get(
        "/",
        response_model=list[HeroPublic],
        responses=PAGED | reads.responses,
        dependencies=reads.dependencies,
    )
    async def read_heroes(
        request: Request,
        session: SessionDep,
        offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
        name: Annotated[StorableText | None, Query(min_length=1, max_length=TEXT_MAX)] = None,
        age_min: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
        age_max: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
        cursor: Annotated[str | None, Query(description=CURSOR_DESCRIPTION)] = None,
    ) -> Response:
        """List heroes ordered by id, optionally filtered by exact name and an age range; a page
        with more after it links to the next one (`Link: <...>; rel="next"`)."""
        after = None
        if cursor is not None:
            if offset:
                raise CursorInvalid("Send either cursor or offset, not both")
            after = decode_cursor(cursor)
        page = await crud.list_heroes(
            session=session, offset=offset, limit=limit, name=name, age_min=age_min,
            age_max=age_max, after=after,
        )  # fmt: skip
        response = json_response(page.heroes)
        if page.more:
            query = {"limit": limit, "name": name, "age_min": age_min, "age_max": age_max}
            response.headers["link"] = next_link(request.url.path, query, page.heroes[-1]["id"])
        return response

    @router.get(
        "/{hero_id}",
        response_model=HeroPublic,
        responses=NOT_FOUND | reads.responses,
        dependencies=reads.dependencies,
    )
    async def read_hero(hero_id: int, session: SessionDep) -> Response:
        """Read one hero."""
        return json_response(await crud.get_hero(session=session, hero_id=hero_id))

    @router.post(
        "/",
        response_model=HeroPublic,
        responses=IDEMPOTENT | writes.responses,
        dependencies=writes.dependencies,
    )
    async def create_hero(hero: HeroCreate, session: SessionDep, key: IdempotencyDep) -> Response:
        """Create a hero; the id is assigned by the server. Safe to retry with an Idempotency-Key."""  # noqa: E501
        create = partial(crud.create_hero, session=session, hero_in=hero)
        return await once(key, session, hero, create)

    @router.patch(
        "/{hero_id}",
        response_model=HeroPublic,
        responses=NOT_FOUND | IDEMPOTENT | writes.responses,
        dependencies=writes.dependencies,
    )
    async def update_hero(
        hero_id: int, hero: HeroUpdate, session: SessionDep, key: IdempotencyDep
    ) -> Response:
        """Change the fields that are sent; the others keep their values."""
        update = partial(crud.update_hero, session=session, hero_id=hero_id, hero_in=hero)
        return await once(key, session, hero, update)

    @router.delete(
        "/{hero_id}",
        response_model=dict[str, bool],
        responses=NOT_FOUND | IDEMPOTENT | writes.responses,
        dependencies=writes.dependencies,
    )
    async def delete_hero(hero_id: int, session: SessionDep, key: IdempotencyDep) -> Response:
        """Delete a hero."""
        delete = partial(crud.delete_hero, session=session, hero_id=hero_id)
        return await once(key, session, None, delete)

    return router
