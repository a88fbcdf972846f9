"""The app factory: routers included by FastAPI's own include_router, overrides applying."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request

from heroes.api.deps import get_session
from heroes.db import Session

from .conftest import create_hero

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
