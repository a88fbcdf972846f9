"""The app factory: routers included flat (one route match per request), as FastAPI would
include them otherwise (dependency overrides, prefixes, the OpenAPI document)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute

from heroes.api.deps import get_session
from heroes.config import Settings
from heroes.db import Session
from heroes.main import create_app

from .conftest import asgi_client, create_hero

pytestmark = pytest.mark.anyio


async def test_plain_routers_are_flattened_into_the_apps_routes() -> None:
    app = create_app(Settings(database_url="sqlite:///unused.db"))
    own = [(route.path, sorted(route.methods or ())) for route in app.router.routes
           if isinstance(route, APIRoute)]  # fmt: skip
    assert ("/heroes/{hero_id}", ["GET"]) in own
    assert ("/heroes/", ["POST"]) in own
    assert ("/health/ready", ["GET"]) in own
    assert ("/metrics", ["GET"]) in own


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
