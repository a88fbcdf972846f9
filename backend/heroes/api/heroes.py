"""Hero routes: thin, the queries live in heroes.crud.

The queries return exactly the public fields, so the routes send them as JSON directly; the
``response_model`` declarations document the bodies in the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from heroes import crud
from heroes.api.deps import session
from heroes.config import Settings
from heroes.errors import CursorInvalid
from heroes.idempotency import REPLAYED_HEADER, IdempotencyDep, respond
from heroes.models import (
    INT32_MAX,
    INT64_MAX,
    TEXT_MAX,
    HeroCreate,
    HeroPublic,
    HeroUpdate,
    StorableText,
)
from heroes.pagination import decode_cursor, next_link
from heroes.security import Protection, protection


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
        "Database unavailable; try again after Retry-After. A write answered 503 may or may not "
        "have been applied (its connection was lost mid-way): retry it with the same "
        "Idempotency-Key, which applies it exactly once",
        Retry_After={"description": "Seconds to wait", "schema": {"type": "integer"}},
    ),
}

#: The schema's description: what no single operation can say (405 belongs to no operation).
DESCRIPTION = """
The Hero API of the FastAPI SQL tutorial: same paths, operation ids, models and bodies.

**Errors** are JSON objects with a `detail`:

| status | when |
| --- | --- |
| 400 | invalid `Content-Length`, a body that cannot be decoded, a malformed \
`Idempotency-Key`, an invalid `cursor` |
| 401 | a protected operation without a valid `Authorization: Bearer <token>` (only when the \
server has API tokens: then "Authorize" takes one) |
| 404 | no hero with that id; unknown paths |
| 405 | a method the path does not support; the `Allow` header lists those it does |
| 409 | a request with the same `Idempotency-Key` is still being processed |
| 413 | a body larger than the server's limit (64 KiB by default) |
| 422 | invalid parameters or body (`detail` lists each problem), or an `Idempotency-Key` \
reused for a different request |
| 503 | the database is unavailable; `Retry-After` says when to try again |
"""

# The write routes accept an Idempotency-Key (heroes.idempotency).
IDEMPOTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Successful Response",
        "headers": {
            REPLAYED_HEADER: {
                "description": "`true` when this is the stored answer to an earlier request "
                "with the same Idempotency-Key (nothing was written this time)",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
    },
    400: _error(
        "Invalid Content-Length, a body that is not decodable, or a malformed Idempotency-Key"
    ),
    409: _error(
        "A request with the same Idempotency-Key is still being processed",
        Retry_After={"description": "Seconds to wait", "schema": {"type": "integer"}},
    ),
    422: {
        "description": "Validation Error, or the Idempotency-Key was used for a different request",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/HTTPValidationError"},
                        {"$ref": "#/components/schemas/ErrorDetail"},
                    ]
                }
            }
        },
    },
}
PAGED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Successful Response",
        "headers": {
            "Link": {
                "description": '`<...>; rel="next"`: the next page by cursor, with the same '
                "filters and limit; absent on the last page",
                "schema": {"type": "string"},
            }
        },
    },
    400: _error("Invalid Content-Length, an invalid cursor, or a cursor sent with an offset"),
}
CHANGES_ONE = NOT_FOUND | IDEMPOTENT
CURSOR_DESCRIPTION = (
    "Opaque: the `cursor` of the previous page's `Link` header. Continues after that page "
    "(keyset on id: as fast at the end as at the start). Not combined with `offset`."
)


def json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


async def create_hero(hero: HeroCreate, request: Request, key: IdempotencyDep) -> Response:
    """Create a hero; the id is assigned by the server. Safe to retry with an Idempotency-Key."""
    db = session(request)
    create = partial(crud.create_hero, session=db, hero_in=hero)
    return await respond(key, db, hero, partial(crud.create_write, hero), create)


async def read_heroes(
    request: Request,
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
        session=session(request), offset=offset, limit=limit, name=name, age_min=age_min,
        age_max=age_max, after=after,
    )  # fmt: skip
    response = json(page.heroes)
    if page.more:
        query = {"limit": limit, "name": name, "age_min": age_min, "age_max": age_max}
        response.headers["link"] = next_link(request.url.path, query, page.heroes[-1]["id"])
    return response


async def read_hero(hero_id: int, request: Request) -> Response:
    """Read one hero."""
    return json(await crud.get_hero(session=session(request), hero_id=hero_id))


async def update_hero(
    hero_id: int, hero: HeroUpdate, request: Request, key: IdempotencyDep
) -> Response:
    """Change the fields that are sent; the others keep their values."""
    db = session(request)
    update = partial(crud.update_hero, session=db, hero_id=hero_id, hero_in=hero)
    return await respond(key, db, hero, partial(crud.update_write, hero_id, hero), update)


async def delete_hero(hero_id: int, request: Request, key: IdempotencyDep) -> Response:
    """Delete a hero."""
    db = session(request)

    async def delete() -> dict[str, bool]:
        await crud.delete_hero(session=db, hero_id=hero_id)
        return {"ok": True}

    return await respond(key, db, None, partial(crud.delete_write, hero_id), delete)


def add_routes(app: FastAPI, settings: Settings) -> None:
    """The hero routes, on the app's own router rather than an included APIRouter: FastAPI (since
    0.137) keeps an included router as a node of a route tree, which costs every request a
    second route match (~25 us, 6 % of a GET one's CPU). Reads and writes are protected apart:
    writes need a token when tokens are configured, reads only with AUTH_PROTECT_READS."""
    reads = protection(settings, writes=False)
    writes = protection(settings, writes=True)
    table: list[tuple[str, str, Callable[..., Any], Any, dict[int | str, Any], Protection]] = [
        ("GET", "/heroes/", read_heroes, list[HeroPublic], PAGED, reads),
        ("GET", "/heroes/{hero_id}", read_hero, HeroPublic, NOT_FOUND, reads),
        ("POST", "/heroes/", create_hero, HeroPublic, IDEMPOTENT, writes),
        ("PATCH", "/heroes/{hero_id}", update_hero, HeroPublic, CHANGES_ONE, writes),
        ("DELETE", "/heroes/{hero_id}", delete_hero, dict[str, bool], CHANGES_ONE, writes),
    ]  # fmt: skip
    for method, path, endpoint, model, responses, guard in table:
        app.add_api_route(
            path,
            endpoint,
            methods=[method],
            response_model=model,
            responses={**COMMON, **responses, **guard.responses},
            dependencies=guard.dependencies,
            tags=["heroes"],
        )
