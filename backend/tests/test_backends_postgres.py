"""The PostgreSQL backend through its real pool: connections killed under load, an outage and
the recovery after it, and a steady load that opens no connection."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import psycopg
import pytest

from harness.postgres import PostgresServer, create_database
from heroes import migrate
from heroes.backends.postgres import PostgresDatabase
from heroes.config import Settings

from .conftest import asgi_client, create_hero, make_settings, running_app

pytestmark = [pytest.mark.anyio, pytest.mark.postgres_only]

READERS = 16


def _admin(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        settings.database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )


def _terminate_app_connections(settings: Settings) -> int:
    with _admin(settings) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'heroes' AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def _sessions_opened(settings: Settings) -> int:
    with _admin(settings) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


class ReadLoad:
    """READERS clients reading one hero in a loop; every answer's status and time recorded."""

    def __init__(self, client: httpx.AsyncClient, path: str, readers: int = READERS) -> None:
        self.client = client
        self.readers = readers
        self.path = path
        self.answers: list[tuple[float, float, int]] = []  # (sent, answered, status)
        self._stop = asyncio.Event()

    async def _reader(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            response = await self.client.get(self.path)
            self.answers.append((sent, time.monotonic(), response.status_code))

    @property
    def statuses(self) -> Counter[int]:
        return Counter(status for _, _, status in self.answers)

    def first_200_after(self, moment: float) -> float:
        return min(at for _, at, status in self.answers if at > moment and status == 200) - moment

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._reader()) for _ in range(self.readers)]
        try:
            yield
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)


async def test_killing_every_app_connection_under_read_load_fails_no_read(
    pg_settings: Settings,
) -> None:
    async with running_app(pg_settings) as app, asgi_client(app) as client:
        hero = await create_hero(client)
        load = ReadLoad(client, f"/heroes/{hero['id']}")
        kills: list[float] = []
        async with load.running():
            for _ in range(2):
                await asyncio.sleep(0.5)
                assert _terminate_app_connections(pg_settings) >= 1
                kills.append(time.monotonic())
            await asyncio.sleep(0.5)
    assert load.statuses[200] > 100
    assert set(load.statuses) == {200}, load.statuses
    for moment in kills:
        assert load.first_200_after(moment) < 1.0


async def test_a_steady_load_opens_no_connection_after_warm_up(pg_settings: Settings) -> None:
    async with running_app(pg_settings) as app, asgi_client(app) as client:
        hero = await create_hero(client)
        db: PostgresDatabase = app.state.db
        # Far more readers than the pool's maximum, so the warm-up needs all of it: a reader
        # spends most of a request outside the database, and with only a few more readers than
        # connections the pool sometimes settled one below its cap and grew in the measured load.
        readers = db.stats().max_size * 3
        load = ReadLoad(client, f"/heroes/{hero['id']}", readers)
        async with load.running():  # warm-up: the pool grows, one at a time, to what it needs
            for _ in range(60):  # until it holds its maximum (at most 15 s)
                if db.stats().open >= db.stats().max_size:
                    break
                await asyncio.sleep(0.25)
        # `open` counts a connection from when the pool schedules it, `opened_total` (the pool's
        # connection attempts) from when its connect starts: let every scheduled connect begin.
        for _ in range(100):
            if db.stats().opened_total >= db.stats().open:
                break
            await asyncio.sleep(0.05)
        opened, sessions = db.stats().opened_total, _sessions_opened(pg_settings)
        load = ReadLoad(client, f"/heroes/{hero['id']}", readers)
        async with load.running():
            await asyncio.sleep(2.0)
        assert set(load.statuses) == {200}
        assert db.stats().opened_total == opened
        # The server's own count (one session more: the query's own admin connection).
        assert _sessions_opened(pg_settings) == sessions + 1


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start without touching the shared one."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_outage_fails_fast_and_recovers_within_a_second(own_server: PostgresServer) -> None:
    url = create_database(own_server.url(), "outage")
    settings = make_settings(url, db_pool_timeout=1.0, db_connect_timeout=1)
    migrate.upgrade(settings)
    async with running_app(settings) as app, asgi_client(app) as client:
        hero = await create_hero(client)
        load = ReadLoad(client, f"/heroes/{hero['id']}")
        async with load.running():
            await asyncio.sleep(0.3)
            own_server.pause()
            stopped = time.monotonic()
            await asyncio.sleep(3.0)
            own_server.resume()
            back = time.monotonic()
            await asyncio.sleep(1.5)
    during = [(sent, at, s) for sent, at, s in load.answers if stopped < sent and at < back]
    assert len(during) >= READERS
    assert {status for _, _, status in during} == {503}
    # Each failure within the pool timeout (1 s), not a hang until the server came back.
    assert max(at - sent for sent, at, _ in during) < 1.5
    assert load.first_200_after(back) < 1.0
