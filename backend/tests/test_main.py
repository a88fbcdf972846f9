"""The app factory: routers included as FastAPI includes them (dependency overrides apply,
options are honoured)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from heroes.api.deps import get_session
from heroes.db import Session

from .conftest import asgi_client, create_hero

pytestmark = pytest.mark.anyio


async def test_dependency_overrides_apply_to_included_routes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    hero = await create_hero(client)
    seen: list[str] = []

    async def traced_session(request: Request) -> Session:
        seen.append(request.url.path)
        return Session(request.app.state.db)

    app.dependency_overrides[get_session] = traced_session
    assert (await client.get(f"/heroes/{hero['id']}")).json() == hero
    assert seen == [f"/heroes/{hero['id']}"]


async def test_a_router_included_with_options_is_included_by_fastapi(app: FastAPI) -> None:
    extra = APIRouter()

    @extra.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    app.include_router(extra, prefix="/extra")
    async with asgi_client(app) as http:
        assert (await http.get("/extra/ping")).json() == {"pong": "yes"}
