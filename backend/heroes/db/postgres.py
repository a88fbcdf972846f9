"""PostgreSQL through psycopg 3 and psycopg_pool's AsyncConnectionPool.

The pool keeps DB_POOL_SIZE connections open and grows to DB_POOL_SIZE + DB_MAX_OVERFLOW under
load; a connection above the minimum is closed only after DB_POOL_MAX_IDLE seconds unused, so a
steady load opens no connection at all. Three settings decide how it behaves around outages:

- the pool's ``check`` asks the kernel whether the server hung up on an idle connection (a
  readable socket: PostgreSQL writes a FATAL message before it closes one) at no round trip; when
  one has, every idle connection is swept with ``pool.check()`` at once, since they all died with
  the same server, instead of failing one request each;
- ``reconnect_timeout`` is short: psycopg_pool retries a failed connect with exponential back-off
  (1 s, 2 s, 4 s...), which after a 10 s outage would leave the pool empty for seconds after the
  server is back; giving up after RECONNECT_WINDOW makes the next request start a fresh attempt,
  so the pool refills within about that window of the server's return;
- ``timeout`` (DB_POOL_TIMEOUT) bounds how long a request waits for a connection, so during an
  outage it answers 503 within that time.

A server that goes silent (a network partition, a host that vanished, a paused container) sends
no error, so nothing above would fire. Two client-side bounds cover it:

- libpq's TCP settings (``keepalives*``, ``tcp_user_timeout``): the kernel declares a connection
  dead after DB_NETWORK_TIMEOUT seconds without an acknowledgement or a keepalive answer, idle
  or not; the server is asked to do the same with its end, so its sessions of a vanished client
  (and their locks) go too, and a transaction left idle is ended (``idle_in_transaction_...``);
- a deadline on every wait for the server (``BoundedConnection.wait``): DB_STATEMENT_TIMEOUT_MS
  plus DB_NETWORK_TIMEOUT, for a server whose kernel still answers but whose process does not
  (paused, hung). A connection that missed it is closed, so the pool never hands it out again.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from time import monotonic
from typing import Any, Self

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests
from sqlalchemy.dialects import postgresql

from heroes.config import Settings
from heroes.db import Database, Params, PoolStats, Row
from heroes.errors import ConnectionLost, DatabaseUnavailable, SchemaMissing, ValueRejected

Connection = psycopg.AsyncConnection[DictRow]
IDLE = TransactionStatus.IDLE

#: Seconds psycopg_pool keeps retrying one failed connect before it gives up (see above).
RECONNECT_WINDOW = 0.5
#: SQLSTATE classes that mean "not now": connection exception, insufficient resources, operator
#: intervention (admin shutdown, crash recovery, statement timeout = 57014 query_canceled).
UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})
#: Seconds a request waits for a sweep of the idle connections before it goes on: a sweep of
#: connections to a silent server would take as long as the network timeout allows.
SWEEP_WAIT = 1.0


def connect_options(settings: Settings, *, statement_timeout: bool = True) -> dict[str, Any]:
    """libpq parameters shared by the API's pool, ``heroes check`` and the migration runner."""
    silence = settings.db_network_timeout
    server = {
        # The server's end of the same silence limit (these are per-session settings).
        "tcp_keepalives_idle": 1,
        "tcp_keepalives_interval": 1,
        "tcp_keepalives_count": max(1, round(silence)),
        "tcp_user_timeout": round(silence * 1000),
    }
    deadline = statement_deadline(settings)
    if statement_timeout and deadline is not None:
        server["statement_timeout"] = settings.db_statement_timeout_ms
        # The API never leaves a transaction waiting on anything but the database: one idle
        # this long belongs to a client that is gone, and would hold its row locks.
        server["idle_in_transaction_session_timeout"] = round(deadline * 1000)
    return {
        "connect_timeout": settings.db_connect_timeout,
        "application_name": "heroes",
        # A probe after 1 s of silence, then every second; the connection is dead once nothing
        # has been acknowledged for DB_NETWORK_TIMEOUT (TCP_USER_TIMEOUT bounds the probes too).
        "keepalives": 1,
        "keepalives_idle": 1,
        "keepalives_interval": 1,
        "keepalives_count": max(1, round(silence)),
        "tcp_user_timeout": round(silence * 1000),
        "options": " ".join(f"-c {name}={value}" for name, value in server.items()),
    }


def statement_deadline(settings: Settings) -> float | None:
    """Seconds the client waits for any one answer of the server before it abandons the
    connection: the server's own statement timeout plus the network's margin (none when the
    statement timeout is off: a deliberate long statement must not be cut)."""
    if not settings.db_statement_timeout_ms:
        return None
    return settings.db_statement_timeout_ms / 1000 + settings.db_network_timeout


def conninfo(settings: Settings) -> str:
    url = settings.sync_url
    return psycopg.conninfo.make_conninfo(
        "",
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        **{key: str(value) for key, value in url.query.items()},
        **connect_options(settings),
    )


def _bounded_connection_class(connect_seconds: float, deadline: float | None) -> type[Connection]:
    class BoundedConnection(psycopg.AsyncConnection[DictRow]):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            # libpq's connect_timeout does not cover resolving the host name, which stalls for
            # seconds under Docker's DNS when the database container is gone.
            async with asyncio.timeout(connect_seconds):
                return await super().connect(conninfo, **kwargs)

        async def wait(
            self,
            gen: Any,
            interval: float = 0.1,
            timeout: float | None = None,  # noqa: ASYNC109 (psycopg's signature, overridden)
        ) -> Any:
            # Every exchange with the server (a statement, a commit, the pool's checks) goes
            # through here: psycopg's own timeout bounds it, without an asyncio cancellation
            # (whose cleanup would first try to cancel the statement over the same silent
            # network, for up to 10 s more).
            try:
                return await super().wait(gen, interval, deadline if timeout is None else timeout)
            except psycopg.OperationalError:
                # The connection failed, or the server stayed silent past the deadline: its
                # state is unknown, so it is closed and the pool discards it.
                await self.close()
                raise

    return BoundedConnection


def _server_hung_up(conn: Connection) -> bool:
    """Whether the server closed this idle connection: it has nothing to say to an idle client
    unless it is saying goodbye (or the kernel gave up on a silent peer), so a readable socket
    means the connection is gone. poll(), not select(): a worker holding many client sockets
    has descriptors above select()'s limit of 1024."""
    if conn.closed:
        return True
    poller = select.poll()
    try:
        poller.register(conn.pgconn.socket, select.POLLIN)
    except (psycopg.OperationalError, OSError, ValueError):
        return True
    return bool(poller.poll(0))


def _classify(conn: Connection, exc: psycopg.Error, sent: float) -> Exception:
    if conn.broken or conn.closed:
        return ConnectionLost(f"database connection lost: {exc}", monotonic() - sent)
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return SchemaMissing(str(exc))
    if (exc.sqlstate or "")[:2] in UNAVAILABLE_CLASSES:
        return DatabaseUnavailable(str(exc))
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return ValueRejected(str(exc))
    return exc


class PostgresDatabase(Database):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
        self._sweep: asyncio.Task[None] | None = None
        self._in_use = 0  # the pool counts connections being opened as in use too
        self.pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo(settings),
            connection_class=_bounded_connection_class(
                settings.db_connect_timeout, statement_deadline(settings)
            ),
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=settings.db_pool_size,
            max_size=settings.db_pool_size + settings.db_max_overflow,
            max_idle=settings.db_pool_max_idle,
            timeout=settings.db_pool_timeout,
            reconnect_timeout=RECONNECT_WINDOW,
            check=self._check if settings.db_pool_pre_ping else None,
            name="heroes",
            open=False,
        )

    async def open(self) -> None:
        # Not waiting: a database that is down at start-up must not keep the API from starting
        # (liveness stays up, readiness says why).
        await self.pool.open(wait=False)

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        await self.pool.close(timeout=2.0)

    async def _check(self, conn: Connection) -> None:
        if not _server_hung_up(conn):
            return
        await conn.close()  # so the pool discards it and opens a replacement
        await self.sweep()
        raise ConnectionLost("the database closed an idle connection")

    async def connection_lost(self) -> None:
        await self.sweep()

    async def sweep(self) -> None:
        """Test every idle connection now (one sweep at a time, shared by all who ask)."""
        if self._sweep is None or self._sweep.done():
            self._sweep = asyncio.get_running_loop().create_task(self.pool.check())
        with suppress(Exception):  # TimeoutError included: the sweep itself goes on
            async with asyncio.timeout(SWEEP_WAIT):
                await asyncio.shield(self._sweep)

    async def _getconn(self) -> Connection:
        try:
            conn = await self.pool.getconn()
        except (PoolTimeout, TooManyRequests) as exc:
            raise DatabaseUnavailable(
                f"no database connection within {self.pool.timeout}s"
            ) from exc
        self._in_use += 1
        return conn

    async def _putconn(self, conn: Connection) -> None:
        self._in_use -= 1
        await self.pool.putconn(conn)  # psycopg_pool rolls back, discards or closes it as needed

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        conn = await self._getconn()
        try:
            yield conn
        finally:
            await self._putconn(conn)

    @asynccontextmanager
    async def transaction(self, conn: Connection) -> AsyncIterator[None]:
        try:
            async with conn.transaction():
                yield
        except psycopg.Error as exc:
            raise _classify(conn, exc, monotonic()) from exc

    async def run(self, conn: Connection, sql: str, params: Params, *, rows: bool) -> Sequence[Row]:
        sent = monotonic()
        try:
            cursor = await conn.execute(sql, params)
            if rows:
                return await cursor.fetchall()
            return ()
        except psycopg.Error as exc:
            raise _classify(conn, exc, sent) from exc

    def stats(self) -> PoolStats:
        stats = self.pool.get_stats()
        return PoolStats(
            size=stats["pool_min"],
            max_size=stats["pool_max"],
            open=stats["pool_size"],
            in_use=self._in_use,
            opened_total=stats.get("connections_num", 0),
        )
