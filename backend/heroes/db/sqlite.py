"""The embedded default: one aiosqlite connection per process, in WAL mode.

aiosqlite runs every statement of a connection on that connection's own thread, one at a time,
so a second connection per process would buy no concurrency; a lock gives the one connection to
one statement or one transaction at a time. Between processes (gunicorn workers) SQLite's own
locking applies: writers wait up to SQLITE_BUSY_TIMEOUT_S for each other.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiosqlite
from sqlalchemy.dialects import sqlite

from heroes.config import Settings
from heroes.db import Database, Params, PoolStats, Row
from heroes.errors import DatabaseUnavailable, SchemaMissing, ValueRejected

SQLITE_BUSY_TIMEOUT_S = 5.0
#: Result codes (the low byte of the extended code) that mean "not now", not "wrong".
UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)


def _classify(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return ValueRejected(str(exc))
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in UNAVAILABLE_CODES:
        return DatabaseUnavailable(str(exc))
    # sqlite3 gives a missing table only the generic SQLITE_ERROR code; its message is the one
    # thing that tells it apart.
    if code == sqlite3.SQLITE_ERROR and str(exc).startswith("no such table"):
        return SchemaMissing(str(exc))
    return exc


class SQLiteDatabase(Database):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.dialect = sqlite.dialect(paramstyle="named")
        self._path = settings.sync_url.database or ":memory:"
        self._timeout = settings.db_pool_timeout
        self._lock = asyncio.Lock()
        self._conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        conn = await aiosqlite.connect(
            self._path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None
        )
        conn.row_factory = aiosqlite.Row
        # WAL: readers run beside the one writer, across processes too.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosqlite.Connection]:
        try:
            async with asyncio.timeout(self._timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise DatabaseUnavailable(f"database busy for more than {self._timeout}s") from None
        try:
            if self._conn is None:
                raise DatabaseUnavailable("database closed")
            yield self._conn
        finally:
            self._lock.release()

    @asynccontextmanager
    async def transaction(self, conn: aiosqlite.Connection) -> AsyncIterator[None]:
        # IMMEDIATE takes the write lock at BEGIN: a transaction that reads and then writes
        # cannot deadlock with another process doing the same.
        await self.run(conn, "BEGIN IMMEDIATE", {}, rows=False)
        try:
            yield
        except BaseException:
            await conn.rollback()
            raise
        await self.run(conn, "COMMIT", {}, rows=False)

    async def run(
        self, conn: aiosqlite.Connection, sql: str, params: Params, *, rows: bool
    ) -> Sequence[Row]:
        try:
            cursor = await conn.execute(sql, params)
            if rows:
                return await cursor.fetchall()  # type: ignore[return-value]  # aiosqlite.Row maps names
            return ()
        except sqlite3.Error as exc:
            raise _classify(exc) from exc

    async def connection_lost(self) -> None:
        """Never happens: the database is a file of this process."""

    def stats(self) -> PoolStats:
        opened = int(self._conn is not None)
        return PoolStats(
            size=1, max_size=1, open=opened, in_use=int(self._lock.locked()), opened_total=opened
        )
