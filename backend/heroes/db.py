"""The API's database access: a pool per worker process, statements compiled once per dialect,
and the Session, the one place that takes and gives back connections.

Every operation of the service is a single SQL statement (INSERT/UPDATE/DELETE ... RETURNING,
SELECT), atomic on its own, so connections run in autocommit mode: one round trip per request,
no BEGIN/COMMIT. Statements are SQLAlchemy Core expressions over the SQLModel table, compiled to
the driver's SQL once; they run on the driver (psycopg 3, or aiosqlite for the embedded default)
without the ORM, whose per-request cost here was ten times that of the query.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Hashable, Mapping, Sequence
from typing import Annotated, Any, Protocol

import aiosqlite
import psycopg
from fastapi import Depends, Request
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from heroes.config import Settings
from heroes.pool import ConnectionPool

SQLITE_BUSY_TIMEOUT_S = 5.0
Row = tuple[Any, ...]


class Connection(Protocol):
    async def execute(self, query: Any, params: Any = ...) -> Any: ...
    async def close(self) -> Any: ...


class ConnectionSource(Protocol):
    def connection(self) -> Any: ...  # an async context manager yielding a Connection


def postgres_connect_args(settings: Settings, *, statement_timeout: bool = True) -> dict[str, Any]:
    args: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout,
        "application_name": "heroes",
    }
    if statement_timeout and settings.db_statement_timeout_ms:
        args["options"] = f"-c statement_timeout={settings.db_statement_timeout_ms}"
    return args


class Database:
    """A connection source plus the statements compiled for its dialect."""

    def __init__(self, source: ConnectionSource, dialect: Dialect) -> None:
        self.source = source
        self.dialect = dialect
        self._compiled: dict[Hashable, str] = {}

    def sql(self, key: Hashable, build: Any) -> str:
        """The SQL text of statement ``key`` (``build()`` makes the Core expression once)."""
        text = self._compiled.get(key)
        if text is None:
            statement: ClauseElement = build()
            text = str(statement.compile(dialect=self.dialect))
            self._compiled[key] = text
        return text

    async def close(self) -> None:
        if isinstance(self.source, ConnectionPool):
            await self.source.close()


def create_database(settings: Settings) -> Database:
    """The API's database (one per process: built in the lifespan, after gunicorn's fork)."""
    if settings.is_sqlite:
        path = settings.sync_url.database or ":memory:"

        async def connect_sqlite() -> aiosqlite.Connection:
            conn = await aiosqlite.connect(
                path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None
            )
            # WAL lets readers run beside the single writer, so concurrent local use works.
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            return conn

        pool: ConnectionPool[Any] = ConnectionPool(
            connect_sqlite,
            is_broken=lambda conn: False,
            size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            timeout=settings.db_pool_timeout,
        )
        return Database(pool, sqlite.dialect(paramstyle="named"))

    url = settings.sync_url
    conninfo = psycopg.conninfo.make_conninfo(
        "",
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        **{k: str(v) for k, v in url.query.items()},
        **postgres_connect_args(settings),
    )

    async def connect_postgres() -> psycopg.AsyncConnection[Any]:
        # libpq's connect_timeout does not cover resolving the host name, which can stall for
        # seconds (a stopped container's name under Docker's DNS): bound the whole attempt.
        async with asyncio.timeout(settings.db_connect_timeout):
            return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)

    async def ping(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT 1")

    pool = ConnectionPool(
        connect_postgres,
        is_broken=lambda conn: bool(conn.broken or conn.closed),
        size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        timeout=settings.db_pool_timeout,
        ping=ping if settings.db_pool_pre_ping else None,
    )
    return Database(pool, postgresql.psycopg.dialect())  # type: ignore[no-untyped-call]


class Session:
    """A request's access to the database. Every operation of the service is one statement, so
    each takes a pooled connection for exactly that statement and gives it straight back: the
    connection is never held while the request waits for the client or serialises its answer."""

    __slots__ = ("db",)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def fetch_one(self, sql: str, params: Mapping[str, Any]) -> Row | None:
        async with self.db.source.connection() as conn:
            cursor = await conn.execute(sql, params)
            row: Row | None = await cursor.fetchone()
            return row

    async def fetch_all(self, sql: str, params: Mapping[str, Any]) -> Sequence[Row]:
        async with self.db.source.connection() as conn:
            cursor = await conn.execute(sql, params)
            rows: Sequence[Row] = await cursor.fetchall()
            return rows


async def get_session(request: Request) -> Session:
    return Session(request.app.state.db)


SessionDep = Annotated[Session, Depends(get_session)]

DRIVER_ERRORS_UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.UndefinedTable,  # not migrated yet: readiness says so too
    sqlite3.OperationalError,
    OSError,
)
DRIVER_ERRORS_REJECTED: tuple[type[Exception], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
)
