"""Hero routes: thin, the queries live in heroes.crud.

The queries return exactly the public fields, so the routes send them as JSON directly; the
``response_model`` declarations document the bodies in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from heroes import crud
from heroes.api.deps import SessionDep
from heroes.models import (
    INT32_MAX,
    INT64_MAX,
    TEXT_MAX,
    HeroCreate,
    HeroPublic,
    HeroUpdate,
    StorableText,
)


class ErrorDetail(BaseModel):
    """The body of every error answer but 422 (whose ``detail`` lists the invalid fields)."""

    detail: str


def _error(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "model": ErrorDetail}
    if headers:
        answer["headers"] = {name.replace("_", "-"): schema for name, schema in headers.items()}
    return answer


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("Hero not found")}
COMMON: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid Content-Length, or a body that is not decodable (bad UTF-8, too deep)"),
    413: _error("Request body larger than MAX_BODY_BYTES"),
    503: _error(
        "Database unavailable; try again later",
        Retry_After={"description": "Seconds to wait", "schema": {"type": "integer"}},
    ),
}

#: The schema's description: what no single operation can say (405 belongs to no operation).
DESCRIPTION = """
The Hero API of the FastAPI SQL tutorial: same paths, operation ids, models and bodies.

**Errors** are JSON objects with a `detail`:

| status | when |
| --- | --- |
| 400 | invalid `Content-Length`, or a body that cannot be decoded |
| 401 | a protected operation without a valid `Authorization: Bearer <token>` (only when the \
server has API tokens: then "Authorize" takes one) |
| 404 | no hero with that id; unknown paths |
| 405 | a method the path does not support; the `Allow` header lists those it does |
| 413 | a body larger than the server's limit (64 KiB by default) |
| 422 | invalid parameters or body; `detail` lists each problem |
| 503 | the database is unavailable; `Retry-After` says when to try again |
"""

# Two groups, so that create_app can require a token for writes (and reads, if configured).
reads = APIRouter(prefix="/heroes", tags=["heroes"], responses=COMMON)
writes = APIRouter(prefix="/heroes", tags=["heroes"], responses=COMMON)


def json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


@writes.post("/", response_model=HeroPublic)
async def create_hero(hero: HeroCreate, session: SessionDep) -> Response:
    """Create a hero; the id is assigned by the server."""
    return json(await crud.create_hero(session=session, hero_in=hero))


@reads.get("/", response_model=list[HeroPublic])
async def read_heroes(
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    name: Annotated[StorableText | None, Query(min_length=1, max_length=TEXT_MAX)] = None,
    age_min: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
    age_max: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
) -> Response:
    """List heroes ordered by id, optionally filtered by exact name and an age range."""
    heroes = await crud.list_heroes(
        session=session, offset=offset, limit=limit, name=name, age_min=age_min, age_max=age_max
    )
    return json(heroes)


@reads.get("/{hero_id}", response_model=HeroPublic, responses=NOT_FOUND)
async def read_hero(hero_id: int, session: SessionDep) -> Response:
    """Read one hero."""
    return json(await crud.get_hero(session=session, hero_id=hero_id))


@writes.patch("/{hero_id}", response_model=HeroPublic, responses=NOT_FOUND)
async def update_hero(hero_id: int, hero: HeroUpdate, session: SessionDep) -> Response:
    """Change the fields that are sent; the others keep their values."""
    return json(await crud.update_hero(session=session, hero_id=hero_id, hero_in=hero))


@writes.delete("/{hero_id}", responses=NOT_FOUND)
async def delete_hero(hero_id: int, session: SessionDep) -> dict[str, bool]:
    """Delete a hero."""
    await crud.delete_hero(session=session, hero_id=hero_id)
    return {"ok": True}
