"""The two database backends behind heroes.db.Database; the settings choose one."""

from __future__ import annotations

from heroes.config import Settings
from heroes.db import Database


def create_database(settings: Settings) -> Database:
    """The process' database, not yet opened (the lifespan opens it, after gunicorn's fork)."""
    if settings.is_sqlite:
        from heroes.backends.sqlite import SQLiteDatabase

        return SQLiteDatabase(settings)
    from heroes.backends.postgres import PostgresDatabase

    return PostgresDatabase(settings)
