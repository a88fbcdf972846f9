"""Framework ceiling: the same endpoints and queries as heroes, FastAPI + a raw psycopg 3 pool.

What a hand-written app can reach on this stack (FastAPI routing, request validation, uvicorn,
gunicorn), so the benchmark can tell framework cost from ORM/application cost. It is honest:
- its routes on an ``APIRouter`` included in the app, as heroes and FastAPI's "Bigger
  Applications" do: since FastAPI 0.137 an included router is a node matched on the way in, a
  cost every app built that way pays (docs/performance.md, "Speed devices");
- the same SQL a careful app sends (ORDER BY id on the list, INSERT ... RETURNING);
- request bodies and query parameters validated by FastAPI/pydantic as in heroes;
- the response body is the tutorial's HeroPublic (id, name, age) -- secret_name never leaves;
- one round trip per request: autocommit connections (a single statement needs no BEGIN/COMMIT),
  no ping on checkout, psycopg's automatic server-side prepared statements;
- responses serialised with orjson straight from the row tuples (no response_model pass).

``CEILING_MODE=async`` (default) uses ``AsyncConnectionPool`` and ``async def`` endpoints on the
event loop; ``CEILING_MODE=sync`` uses ``ConnectionPool`` and ``def`` endpoints, which FastAPI runs
in its thread pool. Pool size: CEILING_POOL_MIN / CEILING_POOL_MAX per worker.

gunicorn target: ``bench.ceiling_app:create_app()`` with ``PYTHONPATH=deploy``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Query, Response
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pydantic import BaseModel, Field

GET_ONE = "SELECT id, name, age FROM hero WHERE id = %s"
GET_LIST = "SELECT id, name, age FROM hero ORDER BY id LIMIT %s OFFSET %s"
INSERT = "INSERT INTO hero (name, secret_name, age) VALUES (%s, %s, %s) RETURNING id, name, age"

Limit = Annotated[int, Query(ge=0, le=100)]
Offset = Annotated[int, Query(ge=0)]


class HeroCreate(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    age: int | None = Field(default=None, ge=0)
    secret_name: str = Field(min_length=1, max_length=255)


def _hero(row: Sequence[Any]) -> dict[str, Any]:
    return {"name": row[1], "age": row[2], "id": row[0]}


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def _not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="Hero not found")


def _pool_settings() -> dict[str, Any]:
    return {
        "conninfo": os.environ["DATABASE_URL"],
        "min_size": int(os.environ.get("CEILING_POOL_MIN", "5")),
        "max_size": int(os.environ.get("CEILING_POOL_MAX", "15")),
        "timeout": float(os.environ.get("CEILING_POOL_TIMEOUT", "30")),
        "kwargs": {"autocommit": True},
        "open": False,
    }


def create_async_app() -> FastAPI:
    pool = AsyncConnectionPool(**_pool_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    router = APIRouter(prefix="/heroes")

    @router.get("/{hero_id}")
    async def read_hero(hero_id: int) -> Response:
        async with pool.connection() as conn:
            cur = await conn.execute(GET_ONE, (hero_id,))
            row = await cur.fetchone()
        if row is None:
            raise _not_found()
        return _json(_hero(row))

    @router.get("/")
    async def read_heroes(offset: Offset = 0, limit: Limit = 100) -> Response:
        async with pool.connection() as conn:
            cur = await conn.execute(GET_LIST, (limit, offset))
            rows = await cur.fetchall()
        return _json([_hero(row) for row in rows])

    @router.post("/")
    async def create_hero(hero: HeroCreate) -> Response:
        async with pool.connection() as conn:
            cur = await conn.execute(INSERT, (hero.name, hero.secret_name, hero.age))
            row = await cur.fetchone()
        if row is None:  # pragma: no cover - RETURNING always yields the row
            raise HTTPException(status_code=500)
        return _json(_hero(row))

    app = FastAPI(lifespan=lifespan, title="heroes ceiling (async)")
    app.include_router(router)
    return app


def create_sync_app() -> FastAPI:
    pool = ConnectionPool(**_pool_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=True)
        yield
        pool.close()

    router = APIRouter(prefix="/heroes")

    @router.get("/{hero_id}")
    def read_hero(hero_id: int) -> Response:
        with pool.connection() as conn:
            row = conn.execute(GET_ONE, (hero_id,)).fetchone()
        if row is None:
            raise _not_found()
        return _json(_hero(row))

    @router.get("/")
    def read_heroes(offset: Offset = 0, limit: Limit = 100) -> Response:
        with pool.connection() as conn:
            rows = conn.execute(GET_LIST, (limit, offset)).fetchall()
        return _json([_hero(row) for row in rows])

    @router.post("/")
    def create_hero(hero: HeroCreate) -> Response:
        with pool.connection() as conn:
            row = conn.execute(INSERT, (hero.name, hero.secret_name, hero.age)).fetchone()
        if row is None:  # pragma: no cover - RETURNING always yields the row
            raise HTTPException(status_code=500)
        return _json(_hero(row))

    app = FastAPI(lifespan=lifespan, title="heroes ceiling (sync)")
    app.include_router(router)
    return app


def create_app() -> FastAPI:
    mode = os.environ.get("CEILING_MODE", "async")
    if mode == "async":
        return create_async_app()
    if mode == "sync":
        return create_sync_app()
    raise ValueError(f"CEILING_MODE must be async or sync, not {mode!r}")
