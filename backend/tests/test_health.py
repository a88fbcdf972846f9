"""Liveness never depends on the database; readiness does, and says why it is not ready."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from heroes import __version__
from heroes.api import health
from heroes.db.migrate import SchemaExpectation
from heroes.lifecycle import begin_draining
from heroes.main import create_app

from .conftest import asgi_client as _client
from .conftest import make_settings

pytestmark = pytest.mark.anyio


async def test_live_is_200_and_names_the_installed_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__, "revision": "unknown"}


async def test_live_reports_the_build_of_the_image(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Dockerfile turns its VERSION/REVISION build args into these variables.
    monkeypatch.setenv("BUILD_VERSION", "1.2.3")
    monkeypatch.setenv("BUILD_REVISION", "0123abcd")
    app = create_app(make_settings(empty_url))
    async with app.router.lifespan_context(app), _client(app) as client:
        response = await client.get("/health/live")
    assert response.json() == {"status": "ok", "version": "1.2.3", "revision": "0123abcd"}


async def test_ready_when_schema_is_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "revision": "0002"}


async def test_not_ready_when_schema_is_behind(app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.schema = SchemaExpectation(head="0003", known=frozenset({"0001", "0002", "0003"}))
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "schema at 0002, expected 0003"}


async def test_not_ready_while_draining_and_connections_close(client: httpx.AsyncClient) -> None:
    begin_draining()
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["reason"] == "shutting down"
    assert response.headers["connection"] == "close"
    served = await client.get("/heroes/")
    assert served.status_code == 200
    assert served.headers["connection"] == "close"


async def test_ready_when_schema_is_ahead_of_this_code(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def newer(_connection: object) -> str:
        return "0099"

    monkeypatch.setattr(health, "current_revision", newer)
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "revision": "0099"}


async def test_not_ready_without_schema(empty_url: str) -> None:
    app = create_app(make_settings(empty_url))
    async with app.router.lifespan_context(app), _client(app) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "schema not migrated"}


async def test_not_ready_when_database_is_slow(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stalled(_connection: object) -> str:
        await asyncio.sleep(5)
        return "0001"

    monkeypatch.setattr(health, "current_revision", stalled)
    app.state.settings = app.state.settings.model_copy(update={"ready_timeout": 0.05})
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["reason"] == "database did not answer in time"
