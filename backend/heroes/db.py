"""Engine factory and the session dependency: the one place that commits or rolls back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from heroes.config import Settings

SQLITE_BUSY_TIMEOUT_S = 5


def create_engine(settings: Settings) -> AsyncEngine:
    """An asyncio engine for the API (one per process: built in the lifespan, after fork)."""
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.async_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        settings.async_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=1800,
        connect_args=postgres_connect_args(settings),
    )


def session_factory(bind: AsyncEngine | AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests; tests bind them to a connection whose transaction they roll back."""
    if isinstance(bind, AsyncConnection):
        return async_sessionmaker(
            bind,
            class_=AsyncSession,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
    return async_sessionmaker(bind, class_=AsyncSession, expire_on_commit=False)


def postgres_connect_args(settings: Settings, *, statement_timeout: bool = True) -> dict[str, Any]:
    args: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout,
        "application_name": "heroes",
    }
    if statement_timeout and settings.db_statement_timeout_ms:
        args["options"] = f"-c statement_timeout={settings.db_statement_timeout_ms}"
    return args


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer, so local concurrent use does not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Commit when the route succeeded, roll back when it raised.

    Used with ``scope="function"`` so the commit happens before the response is sent:
    a client never sees 200 for a write that did not commit.
    """
    factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    async with factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
