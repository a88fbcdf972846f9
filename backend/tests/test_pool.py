"""The API's connection pool: bounded, fast to fail, quick to recover after a database restart."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from heroes.pool import ConnectionPool, PoolTimeout

pytestmark = pytest.mark.anyio


class FakeConnection:
    ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self.ids)
        self.broken = False
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def fake_pool(
    size: int = 2, max_overflow: int = 1, timeout: float = 0.05, **kwargs: Any
) -> ConnectionPool[FakeConnection]:
    async def connect() -> FakeConnection:
        return FakeConnection()

    return ConnectionPool(
        connect,
        is_broken=lambda conn: conn.broken,
        size=size,
        max_overflow=max_overflow,
        timeout=timeout,
        **kwargs,
    )


async def test_idle_connections_are_reused_last_in_first_out() -> None:
    pool = fake_pool()
    async with pool.connection() as first, pool.connection() as second:
        pass
    async with pool.connection() as again:
        assert again is first  # given back last
    assert not second.closed
    assert (pool.opened, pool.idle, pool.checked_out) == (2, 2, 0)
    assert not first.closed


async def test_overflow_connections_are_closed_when_returned() -> None:
    pool = fake_pool(size=1, max_overflow=1)
    async with pool.connection() as returned_last, pool.connection() as returned_first:
        assert pool.overflow == 1
    await asyncio.sleep(0)
    assert returned_last.closed
    assert not returned_first.closed
    assert (pool.opened, pool.idle, pool.overflow) == (1, 1, 0)


async def test_exhausted_pool_times_out() -> None:
    pool = fake_pool(size=1, max_overflow=0, timeout=0.05)
    async with pool.connection():
        with pytest.raises(PoolTimeout):
            async with pool.connection():
                pass  # pragma: no cover
    async with pool.connection():  # the slot came back
        pass


async def test_a_waiter_gets_the_connection_that_is_given_back() -> None:
    pool = fake_pool(size=1, max_overflow=0, timeout=1)

    async def hold() -> None:
        async with pool.connection():
            await asyncio.sleep(0.05)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    async with pool.connection() as conn:
        assert not conn.closed
    await holder


async def test_a_broken_connection_drops_every_idle_one() -> None:
    pool = fake_pool(size=3, max_overflow=0)
    async with pool.connection() as a, pool.connection() as b, pool.connection() as c:
        pass

    async def query_on_a_dead_server() -> None:
        async with pool.connection() as conn:
            conn.broken = True
            raise OSError("server closed the connection")

    with pytest.raises(OSError, match="server closed"):
        await query_on_a_dead_server()
    await asyncio.sleep(0)
    assert all(x.closed for x in (a, b, c))
    assert (pool.opened, pool.idle) == (0, 0)
    async with pool.connection() as fresh:
        assert fresh not in (a, b, c)


async def test_a_failed_request_keeps_a_healthy_connection() -> None:
    pool = fake_pool()
    with pytest.raises(ValueError, match="bad value"):
        async with pool.connection() as conn:
            raise ValueError("bad value")
    assert pool.idle == 1
    assert not conn.closed


async def test_a_cancelled_request_does_not_return_its_connection() -> None:
    pool = fake_pool()
    started = asyncio.Event()

    async def query() -> None:
        async with pool.connection():
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(query())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert (pool.opened, pool.idle, pool.checked_out) == (0, 0, 0)


async def test_old_connections_are_recycled() -> None:
    pool = fake_pool(max_lifetime=0.0)
    async with pool.connection() as conn:
        pass
    await asyncio.sleep(0)
    assert conn.closed
    assert pool.idle == 0


async def test_close_closes_idle_connections_and_stops_reuse() -> None:
    pool = fake_pool()
    async with pool.connection() as busy:
        async with pool.connection() as idle:
            pass
        await pool.close()
        assert idle.closed
    await asyncio.sleep(0)
    assert busy.closed
    assert pool.opened == 0


async def test_idle_connections_are_pinged_and_stale_ones_replaced() -> None:
    pinged: list[int] = []

    async def ping(conn: FakeConnection) -> None:
        pinged.append(conn.id)
        if conn.broken:
            raise OSError("server closed the connection")

    pool = fake_pool(size=2, max_overflow=0, ping=ping, ping_after_idle=0.0)
    async with pool.connection() as first, pool.connection() as second:
        pass
    async with pool.connection() as healthy:
        assert healthy is first
    assert pinged == [first.id]
    first.broken = second.broken = True  # the database restarted while they sat idle
    async with pool.connection() as fresh:
        assert fresh not in (first, second)
    await asyncio.sleep(0)
    assert first.closed
    assert second.closed


async def test_busy_connections_are_not_pinged() -> None:
    pinged: list[int] = []

    async def ping(conn: FakeConnection) -> None:
        pinged.append(conn.id)

    pool = fake_pool(ping=ping, ping_after_idle=60.0)
    for _ in range(3):
        async with pool.connection():
            pass
    assert pinged == []
