"""A small asyncio connection pool for the API's database connections (one per worker process).

Why not SQLAlchemy's pool or psycopg_pool: SQLAlchemy's asyncio checkout alone cost ~90 us per
request here (greenlet hops), more than the query itself; psycopg_pool opens connections in a
background task with exponential back-off, so after a database outage requests wait seconds for
a connection that a direct connect would have had at once. This pool connects on demand in the
request (bounded by the connect timeout, so a database that is down answers 503 at once), reuses
idle connections last-in-first-out, and forgets every idle connection when one turns out broken
(after a database restart they all are), so recovery costs at most one failed request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar


class PoolTimeout(Exception):
    """No connection became free within the pool timeout."""


class Closeable(Protocol):
    async def close(self) -> Any: ...


C = TypeVar("C", bound=Closeable)


class ConnectionPool(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        *,
        is_broken: Callable[[C], bool],
        size: int,
        max_overflow: int,
        timeout: float,
        max_lifetime: float = 1800.0,
        ping: Callable[[C], Awaitable[object]] | None = None,
        ping_after_idle: float = 10.0,
    ) -> None:
        self._connect = connect
        self._is_broken = is_broken
        self.size = size  # connections kept open when idle
        self.max_size = size + max_overflow  # connections open at most
        self.timeout = timeout
        self.max_lifetime = max_lifetime
        # Pre-ping only connections that sat idle: under load they are never pinged (no extra
        # round trip), after a quiet spell a stale one is found before a request uses it.
        self._ping = ping
        self.ping_after_idle = ping_after_idle
        self._slots = asyncio.Semaphore(self.max_size)
        self._idle: list[tuple[C, float, float]] = []  # (connection, opened at, idle since)
        self.opened = 0  # connections open right now (idle + checked out)
        self.checked_out = 0
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[C]:
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolTimeout(f"no database connection free within {self.timeout}s") from None
        else:
            await self._slots.acquire()
        self.checked_out += 1
        try:
            conn, born = await self._take()
            try:
                yield conn
            except asyncio.CancelledError:
                # The request was cancelled, perhaps mid-query: don't reuse the connection.
                self._discard(conn)
                raise
            except BaseException:
                self._give_back(conn, born)
                raise
            self._give_back(conn, born)
        finally:
            self.checked_out -= 1
            self._slots.release()

    async def _take(self) -> tuple[C, float]:
        if self._idle:
            conn, born, idle_since = self._idle.pop()
            if self._ping is None or time.monotonic() - idle_since < self.ping_after_idle:
                return conn, born
            try:
                await self._ping(conn)
            except Exception:
                self._forget_all(conn)
            else:
                return conn, born
        conn = await self._connect()
        self.opened += 1
        return conn, time.monotonic()

    def _give_back(self, conn: C, born: float) -> None:
        if self._is_broken(conn):
            self._forget_all(conn)
        elif (
            self._closed
            or len(self._idle) >= self.size  # an overflow connection: closed, as in SQLAlchemy
            or time.monotonic() - born > self.max_lifetime
        ):
            self._discard(conn)
        else:
            self._idle.append((conn, born, time.monotonic()))

    def _forget_all(self, broken: C) -> None:
        """The server went away: every idle connection is from before that moment too."""
        self._discard(broken)
        for idle, _, _ in self._idle:
            self._discard(idle)
        self._idle.clear()

    def _discard(self, conn: C) -> None:
        self.opened -= 1
        task = asyncio.get_running_loop().create_task(conn.close())
        task.add_done_callback(_ignore_result)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        self.opened -= len(idle)
        await asyncio.gather(*(conn.close() for conn, _, _ in idle), return_exceptions=True)

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def overflow(self) -> int:
        return max(0, self.opened - self.size)


def _ignore_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
