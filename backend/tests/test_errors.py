"""Failures map to clear JSON answers: a database outage is a quick 503, a bug a bare 500."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from heroes import crud
from heroes.main import create_app

from .conftest import asgi_client, make_settings

pytestmark = pytest.mark.anyio

# Nothing listens on port 1: connections are refused at once, like a database that is down.
DOWN = "postgresql://heroes@127.0.0.1:1/heroes"


async def test_database_down_is_a_quick_503_and_liveness_stays_up() -> None:
    app = create_app(make_settings(DOWN, db_connect_timeout=1))
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        started = time.monotonic()
        for method, path in [("GET", "/heroes/"), ("GET", "/heroes/1"), ("DELETE", "/heroes/1")]:
            response = await client.request(method, path)
            assert response.status_code == 503
            assert response.json() == {"detail": "Database unavailable"}
            assert response.headers["retry-after"] == "1"
        created = await client.post("/heroes/", json={"name": "a", "secret_name": "b"})
        assert created.status_code == 503
        assert time.monotonic() - started < 5
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith("database unreachable")


async def test_unexpected_error_is_json_500_without_internals(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**_kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(crud, "get_hero", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/heroes/1")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert "secret internal detail" not in response.text


async def test_value_the_database_rejects_is_422_not_500(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def rejected(**_kwargs: object) -> None:
        raise psycopg.errors.NumericValueOutOfRange("integer out of range")

    monkeypatch.setattr(crud, "create_hero", rejected)
    response = await client.post("/heroes/", json={"name": "a", "secret_name": "b"})
    assert response.status_code == 422
    assert response.json() == {"detail": "Value rejected by the database"}
