"""The PostgreSQL backend through its real pool: connections killed under load, an outage and
the recovery after it, and a steady load that opens no connection."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path

import httpx
import psycopg
import pytest

from harness.postgres import PostgresServer, create_database
from heroes.config import Settings
from heroes.db import migrate
from heroes.db.postgres import PostgresDatabase

from .conftest import asgi_client, create_hero, make_settings, running_app
from .gunicorn_server import Gunicorn

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


@contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """The server's processes stopped (SIGSTOP), as a paused container or a hung host: its
    kernel still accepts and acknowledges, nothing answers."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGSTOP)  # first: it forks no backend while the rest are found
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            if int(stat.read_text().rpartition(")")[2].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    for pid in children:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in [postmaster, *children]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _silent_server_settings(own_server: PostgresServer, name: str) -> Settings:
    url = create_database(own_server.url(), name)
    # Client deadline 0.5 + 1 = 1.5 s; a request waits at most 1 s for a connection.
    settings = make_settings(
        url,
        db_statement_timeout_ms=500,
        db_network_timeout=1,
        db_pool_timeout=1.0,
        db_connect_timeout=1,
        ready_timeout=0.5,
    )
    migrate.upgrade(settings)
    return settings


async def test_a_silent_server_gets_503_within_the_deadline_and_recovers(
    own_server: PostgresServer,
) -> None:
    settings = _silent_server_settings(own_server, "silent_reads")
    async with running_app(settings) as app, asgi_client(app) as client:
        hero = await create_hero(client)
        load = ReadLoad(client, f"/heroes/{hero['id']}")
        async with load.running():
            await asyncio.sleep(0.3)
            with frozen(own_server):
                silent = time.monotonic()
                await asyncio.sleep(4.0)
                ready = await client.get("/health/ready")
            back = time.monotonic()
            while (await client.get("/health/ready")).status_code != 200:
                assert time.monotonic() - back < 1.0, "not ready 1 s after the server's return"
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.0)
        assert ready.status_code == 503
        assert ready.json()["reason"] == "database did not answer in time"
    during = [(sent, at, s) for sent, at, s in load.answers if silent < sent and at < back]
    assert len(during) >= READERS
    assert {status for _, _, status in during} == {503}
    # Deadline (1.5 s) + pool timeout (1 s), never the silence's whole 4 s.
    slowest = max(at - sent for sent, at, _ in load.answers)
    assert slowest < 3.0, slowest
    assert load.first_200_after(back) < 1.5


async def test_a_write_cut_by_the_deadline_is_not_resent_and_its_keyed_retry_writes_once(
    own_server: PostgresServer,
) -> None:
    settings = _silent_server_settings(own_server, "silent_writes")
    async with running_app(settings) as app, asgi_client(app) as client:
        await create_hero(client)  # the pool is open and warm
        body = {"name": "Rusty-Man", "secret_name": "Tommy Sharp"}
        with frozen(own_server):
            started = time.monotonic()
            cut = await client.post("/heroes/", json=body, headers={"Idempotency-Key": "cut-1"})
            waited = time.monotonic() - started
        assert cut.status_code == 503, cut.text
        assert cut.headers["Retry-After"]
        assert waited < 2.0, waited
        # The server read the INSERT from its socket once it ran again, or never did: either
        # way the client's retry with the same key leaves exactly one hero.
        for _ in range(20):
            retry = await client.post("/heroes/", json=body, headers={"Idempotency-Key": "cut-1"})
            if retry.status_code != 409:
                break
            await asyncio.sleep(0.1)
        assert retry.status_code == 200, retry.text
        listed = (await client.get("/heroes/")).json()
    assert [h["name"] for h in listed].count("Rusty-Man") == 1


async def test_the_idle_check_works_with_descriptors_above_1024(pg_settings: Settings) -> None:
    """A worker with many client sockets opens its database connections on descriptors above
    select()'s 1024: the idle check must still tell a sound one from a dead one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        async with running_app(pg_settings) as app, asgi_client(app) as client:
            hero = await create_hero(client)
            db: PostgresDatabase = app.state.db
            assert _terminate_app_connections(pg_settings) >= 1
            for _ in range(3):  # the first reads meet the dead connections, then the refill
                await client.get(f"/heroes/{hero['id']}")
            for _ in range(100):  # the pool back at its minimum, on descriptors > 1024
                if db.stats().open >= db.stats().size:
                    break
                await asyncio.sleep(0.05)
            async with db.connection() as conn:
                assert conn.pgconn.socket > 1024
            opened = _sessions_opened(pg_settings)
            statuses = Counter(
                [(await client.get(f"/heroes/{hero['id']}")).status_code for _ in range(300)]
            )
            assert statuses == {200: 300}
            # At most 2 more (plus this query's own admin session): no sound connection discarded.
            assert _sessions_opened(pg_settings) - opened <= 3
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_connections_carry_the_network_timeouts_on_both_ends(pg_settings: Settings) -> None:
    async with running_app(pg_settings) as app:
        db: PostgresDatabase = app.state.db
        async with db.connection() as conn:
            client = conn.info.get_parameters()
            server = {
                name: (await (await conn.execute(f"SHOW {name}")).fetchone() or {}).get(name)
                for name in (
                    "tcp_user_timeout",
                    "tcp_keepalives_idle",
                    "statement_timeout",
                    "idle_in_transaction_session_timeout",
                )
            }
    # Defaults: silence limit 3 s, statement timeout 5 s, client deadline 5 + 3 s.
    assert client["keepalives"] == "1"
    assert client["tcp_user_timeout"] == "3000"
    assert server == {
        "tcp_user_timeout": "3000",  # SHOW gives these two without a unit
        "tcp_keepalives_idle": "1",
        "statement_timeout": "5s",
        "idle_in_transaction_session_timeout": "8s",
    }


def test_a_worker_holding_1100_client_connections_keeps_sound_database_connections(
    pg_settings: Settings, tmp_path: Path
) -> None:
    """The issue's measurement, on the production server: one worker holds 1,100 keep-alive
    client connections, every app connection to the database is terminated, and the 300 reads
    after the recovery open at most 2 new ones (select() on a descriptor >= 1024 used to call
    every connection opened then dead at its next checkout: one new connection per read)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 4096, f"this test needs RLIMIT_NOFILE's hard limit >= 4096, not {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))  # the server inherits it
    url = pg_settings.database_url
    server = Gunicorn(tmp_path, workers=1, DATABASE_URL=url, KEEPALIVE="120", LOG_LEVEL="warning")
    held: list[socket.socket] = []
    try:
        server.start()
        with httpx.Client(base_url=server.url) as client:
            created = client.post("/heroes/", json={"name": "Dr. Weird", "secret_name": "Steve"})
            path = f"/heroes/{created.json()['id']}"
            for _ in range(1100):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                held.append(sock)
            for sock in held:  # each answered once, then idle on keep-alive
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            (worker,) = server.workers()
            assert len(os.listdir(f"/proc/{worker}/fd")) > 1100
            assert _terminate_app_connections(pg_settings) >= 1
            for _ in range(5):  # the reads that meet the dead connections, and the refill
                client.get(path)
            time.sleep(1.0)
            opened = _sessions_opened(pg_settings)
            statuses = Counter(client.get(path).status_code for _ in range(300))
            new = _sessions_opened(pg_settings) - opened - 1  # - the count's own session
    finally:
        for sock in held:
            sock.close()
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert statuses == {200: 300}
    assert new <= 2, f"{new} new PostgreSQL connections for 300 reads"


async def test_requests_beyond_the_pool_are_served_in_turn_and_wait_no_longer_than_its_timeout(
    pg_settings: Settings,
) -> None:
    settings = pg_settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 1, "db_pool_timeout": 0.5}
    )
    async with running_app(settings) as app, asgi_client(app) as client:
        hero = await create_hero(client)
        db: PostgresDatabase = app.state.db
        # 24 readers at a time on 2 connections, 10 times: psycopg_pool queues them in turn.
        statuses = []
        for _ in range(10):
            statuses += await asyncio.gather(
                *(client.get(f"/heroes/{hero['id']}") for _ in range(24))
            )
        assert Counter(r.status_code for r in statuses) == {200: 240}
        assert db.stats().open <= 2

        async def hold(seconds: float) -> None:
            async with db.connection() as conn:
                await conn.execute("SELECT pg_sleep(%s)", (seconds,))

        holders = [asyncio.create_task(hold(1.5)) for _ in range(2)]
        await asyncio.sleep(0.2)  # both connections taken
        sent = time.monotonic()
        refused = await client.get(f"/heroes/{hero['id']}")
        waited = time.monotonic() - sent
        assert refused.status_code == 503, refused.text
        assert 0.4 < waited < 1.0  # DB_POOL_TIMEOUT, not the holders' 1.5 s
        await asyncio.gather(*holders)
        assert (await client.get(f"/heroes/{hero['id']}")).status_code == 200
        assert db.stats().in_use == 0


async def test_idle_connections_are_back_in_the_pool_when_requests_end(
    pg_settings: Settings,
) -> None:
    """psycopg_pool holds every idle connection, so its max_idle, max_lifetime and shrinking
    apply."""
    async with running_app(pg_settings) as app, asgi_client(app) as client:
        hero = await create_hero(client)
        db: PostgresDatabase = app.state.db
        load = ReadLoad(client, f"/heroes/{hero['id']}")
        async with load.running():
            await asyncio.sleep(0.5)
        assert set(load.statuses) == {200}
        # A connection the pool is still opening in the background (it grew under the load)
        # counts in pool_size before it is available: wait for that, not for a request.
        deadline = time.monotonic() + 5
        stats = db.pool.get_stats()
        while stats["pool_available"] != stats["pool_size"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            stats = db.pool.get_stats()
        assert stats["pool_available"] == stats["pool_size"] >= 1
        assert stats.get("requests_waiting", 0) == 0
