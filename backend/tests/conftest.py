"""Every API test runs on SQLite and on PostgreSQL, each test on an isolated database: a fresh
copy of a migrated SQLite file, or the PostgreSQL test database emptied (TRUNCATE ... RESTART
IDENTITY) before the test. The app runs as in production: its own pool, autocommit, timeouts."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from harness.postgres import PostgresServer, create_database
from heroes.config import Settings
from heroes.db import migrate
from heroes.lifecycle import reset_draining
from heroes.main import create_app

BACKENDS = ("sqlite", "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default=os.environ.get("TEST_BACKENDS", ",".join(BACKENDS)),
        help="comma-separated database backends to run the suite on (sqlite,postgres)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = set(str(config.getoption("--backends")).split(","))
    unknown = wanted - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"unknown backends: {sorted(unknown)}")
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec else None
        if backend is None and item.get_closest_marker("postgres_only"):
            backend = "postgres"
        (drop if backend is not None and backend not in wanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """TEST_DATABASE_URL when given (CI service container), else a server of our own."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given.replace("postgresql://", "postgresql+psycopg://", 1)
        return
    server = PostgresServer()
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "environment": "development"}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def migrated_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    """A database at head, migrated once per session (SQLite template, or the PG test database)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('template') / 'heroes.db'}"
        migrate.upgrade(make_settings(url))
        return url
    pg_url: str = request.getfixturevalue("pg_migrated_url")
    return pg_url


@pytest.fixture(scope="session")
def pg_migrated_url(pg_admin_url: str) -> str:
    url = create_database(pg_admin_url, "heroes_test")
    migrate.upgrade(make_settings(url))
    return url


@pytest.fixture
def pg_settings(pg_migrated_url: str) -> Settings:
    """Settings for the emptied PostgreSQL test database, for tests of PostgreSQL alone."""
    truncate_all(pg_migrated_url)
    return make_settings(pg_migrated_url)


def truncate_all(url: str) -> None:
    """Empty every table but alembic's, and restart the id sequences."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        ).fetchall()
        if tables:
            names = ", ".join(name for (name,) in tables)
            conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture
def settings(backend: str, migrated_url: str, tmp_path: Path) -> Settings:
    if backend == "sqlite":
        template = Path(migrated_url.removeprefix("sqlite:///"))
        shutil.copy(template, tmp_path / "heroes.db")
        return make_settings(f"sqlite:///{tmp_path / 'heroes.db'}")
    truncate_all(migrated_url)
    return make_settings(migrated_url)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan entered: its own database pool, as in a worker."""
    application = create_app(settings)
    try:
        async with application.router.lifespan_context(application):
            yield application
    finally:
        reset_draining()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as http:
        yield http


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database with no schema at all."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return create_database(request.getfixturevalue("pg_admin_url"), f"empty_{os.getpid()}")


async def create_hero(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Deadpond", "secret_name": "Dive Wilson", **fields}
    response = await client.post("/heroes/", json=body)
    assert response.status_code == 200, response.text
    hero: dict[str, Any] = response.json()
    return hero
