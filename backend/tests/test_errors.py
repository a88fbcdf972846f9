"""Failures map to clear JSON answers: the database unavailable is a quick 503, a value it refuses
a 422, a bug a 500 with its traceback in the log. Each failure is real, not a raised stand-in."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from heroes.config import Settings
from heroes.db import Session
from heroes.domain import crud
from heroes.domain.models import HeroCreate

from .conftest import asgi_client, make_settings, running_app
from .logcapture import capture_logs

pytestmark = pytest.mark.anyio

# Nothing listens on port 1: connections are refused at once, like a database that is down.
DOWN = "postgresql://heroes@127.0.0.1:1/heroes"


async def test_database_down_is_a_quick_503_and_liveness_stays_up() -> None:
    settings = make_settings(DOWN, db_connect_timeout=1, db_pool_timeout=0.5)
    async with running_app(settings) as app, asgi_client(app) as client:
        for method, path in [("GET", "/heroes/"), ("GET", "/heroes/1"), ("DELETE", "/heroes/1")]:
            started = time.monotonic()
            response = await client.request(method, path)
            assert time.monotonic() - started < 1.0  # the pool timeout, not a hang
            assert response.status_code == 503
            assert response.json() == {"detail": "Database unavailable"}
            assert response.headers["retry-after"] == "1"
        created = await client.post("/heroes/", json={"name": "a", "secret_name": "b"})
        assert created.status_code == 503
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "database unavailable (PoolTimeout)"


async def test_unmigrated_database_is_a_503_that_says_so(empty_url: str) -> None:
    async with running_app(make_settings(empty_url)) as app, asgi_client(app) as client:
        response = await client.get("/heroes/")
    assert response.status_code == 503
    assert response.json() == {"detail": "Database not migrated"}


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


async def test_a_driver_error_that_is_a_bug_is_a_500_with_its_traceback(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bad_sql(*, session: Session, **_kwargs: object) -> Any:
        return await session.fetch_one(text("SELEC 1"))  # a typo: a bug, not an outage

    monkeypatch.setattr(crud, "get_hero", bad_sql)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with capture_logs() as logs:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/heroes/1", headers={"X-Request-ID": "req-bug-1"})
    assert response.status_code == 500
    [line] = [line for line in logs.lines("heroes.errors") if line["msg"] == "unhandled error"]
    assert line["request_id"] == "req-bug-1"
    assert "syntax error" in line["exc"]


async def test_value_the_database_rejects_is_422_not_500(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = crud.create_hero

    async def unvalidated(*, session: Session, hero_in: HeroCreate) -> Any:
        # A value the validation let through (here: none at all) and the NOT NULL column refuses.
        sneaky = HeroCreate.model_construct(name=None, secret_name="b", age=None)  # type: ignore[arg-type]
        return await real_create(session=session, hero_in=sneaky)

    monkeypatch.setattr(crud, "create_hero", unvalidated)
    response = await client.post("/heroes/", json={"name": "a", "secret_name": "b"})
    assert response.status_code == 422
    assert response.json() == {"detail": "Value rejected by the database"}
    assert (await client.get("/heroes/")).json() == []


@pytest.mark.postgres_only
async def test_statement_timeout_is_a_503(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow(*, session: Session, **_kwargs: object) -> Any:
        return await session.fetch_one(text("SELECT pg_sleep(2)"))

    monkeypatch.setattr(crud, "get_hero", slow)
    settings = pg_settings.model_copy(update={"db_statement_timeout_ms": 100})
    async with running_app(settings) as app, asgi_client(app) as client:
        started = time.monotonic()
        response = await client.get("/heroes/1")
        assert time.monotonic() - started < 1.5
        assert response.status_code == 503
        assert response.json() == {"detail": "Database unavailable"}
        # The connection that was cancelled is fine: the next request is served.
        monkeypatch.undo()
        assert (await client.get("/heroes/1")).status_code == 404
