"""The database layer: what a query function sees (Session) and what a backend provides (Database).

Statements are SQLAlchemy Core expressions over the SQLModel tables, compiled to the driver's SQL
once per statement object and run on the driver itself (psycopg 3 through psycopg_pool, or
aiosqlite for the embedded default), without the ORM, whose per-request cost dwarfed the query's
(docs/architecture.md). Rows come back by column name.

A single statement runs in autocommit: one round trip, atomic on its own. Work of several
statements goes in ``async with session.transaction():``, on one connection, committed when the
block ends and rolled back when it raises.

Errors leave this layer as heroes.errors' database errors (DatabaseUnavailable, ConnectionLost,
SchemaMissing, ValueRejected), decided by the driver error's type. Nothing here imports the web
layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from heroes.config import Settings
from heroes.errors import ConnectionLost

Row = Mapping[str, Any]
Params = Mapping[str, Any]

#: A read whose connection broke within this many seconds is sent once more (see Session._run).
RESEND_WITHIN = 1.0


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int  # connections kept open when idle
    max_size: int  # connections open at most
    open: int  # connections open now (idle + in use)
    in_use: int
    opened_total: int  # connections opened since start: a steady load keeps it flat


class Database(ABC):
    """One per process (built in the lifespan, after gunicorn's fork): a connection source and the
    SQL of every statement compiled for its dialect."""

    dialect: Dialect

    def __init__(self) -> None:
        # Keyed by the statement object itself (query functions keep one object per statement);
        # the object is stored too, so its id cannot be reused while the entry exists.
        self._compiled: dict[int, tuple[ClauseElement, str]] = {}

    def sql(self, statement: ClauseElement) -> str:
        entry = self._compiled.get(id(statement))
        if entry is None:
            entry = (statement, str(statement.compile(dialect=self.dialect)))
            self._compiled[id(statement)] = entry
        return entry[1]

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def connection(self) -> AbstractAsyncContextManager[Any]:
        """A connection for the caller alone, in autocommit; raises DatabaseUnavailable."""

    @abstractmethod
    def transaction(self, conn: Any) -> AbstractAsyncContextManager[None]:
        """BEGIN on ``conn``; COMMIT when the block ends, ROLLBACK when it raises."""

    @abstractmethod
    async def run(self, conn: Any, sql: str, params: Params, *, rows: bool) -> Sequence[Row]:
        """Execute ``sql``; its rows when ``rows``. Driver errors leave as this module's errors."""

    async def run_alone(self, sql: str, params: Params, *, rows: bool) -> Sequence[Row]:
        """Execute ``sql`` on a connection of its own, in autocommit, given back at once."""
        async with self.connection() as conn:
            return await self.run(conn, sql, params, rows=rows)

    @abstractmethod
    def stats(self) -> PoolStats: ...

    @abstractmethod
    async def connection_lost(self) -> None:
        """A connection broke under a statement: make sure the next one handed out is sound."""


class Session:
    """A request's access to the database: each statement takes a pooled connection for just
    that statement (never held while the request waits for its client), except inside
    ``transaction()``, where every statement runs on the transaction's connection."""

    __slots__ = ("_conn", "db")

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Any = None

    async def fetch_one(self, statement: ClauseElement, params: Params | None = None) -> Row | None:
        found = await self._run(statement, params, rows=True)
        return found[0] if found else None

    async def fetch_all(self, statement: ClauseElement, params: Params | None = None) -> list[Row]:
        return list(await self._run(statement, params, rows=True))

    async def execute(self, statement: ClauseElement, params: Params | None = None) -> None:
        await self._run(statement, params, rows=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        if self._conn is not None:
            raise RuntimeError("a transaction is already open on this session")
        async with self.db.connection() as conn, self.db.transaction(conn):
            self._conn = conn
            try:
                yield self
            finally:
                self._conn = None

    async def _run(
        self, statement: ClauseElement, params: Params | None, *, rows: bool
    ) -> Sequence[Row]:
        sql = self.db.sql(statement)
        values = params or {}
        if self._conn is not None:
            return await self.db.run(self._conn, sql, values, rows=rows)
        try:
            return await self.db.run_alone(sql, values, rows=rows)
        except ConnectionLost as lost:
            # A read changes nothing, so it is safe to send again; a write may have been applied
            # before the connection broke, so it is never resent. A read that broke only after
            # RESEND_WITHIN was most likely cut by a silent network (a timeout): sending it again
            # would make its client wait as long once more, for the same answer.
            if not getattr(statement, "is_select", False) or lost.after > RESEND_WITHIN:
                raise
            # Its idle siblings most likely died with it (a restart, a failover, a mass kill).
            await self.db.connection_lost()
        return await self.db.run_alone(sql, values, rows=rows)


def create_database(settings: Settings) -> Database:
    """The process' database (PostgreSQL or the embedded SQLite, as the settings say), not yet
    opened: the lifespan opens it, after gunicorn's fork."""
    if settings.is_sqlite:
        from heroes.db.sqlite import SQLiteDatabase

        return SQLiteDatabase(settings)
    from heroes.db.postgres import PostgresDatabase

    return PostgresDatabase(settings)
