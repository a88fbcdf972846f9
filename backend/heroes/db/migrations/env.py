"""Alembic environment: URL from the settings, a PostgreSQL advisory lock around every run."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text
from sqlmodel import SQLModel

from heroes.config import Settings, get_settings
from heroes.db.migrate import ADVISORY_LOCK_KEY
from heroes.db.postgres import connect_options
from heroes.domain import models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
if config.config_file_name and not config.attributes.get("settings"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
settings: Settings = config.attributes.get("settings") or get_settings()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    url = settings.sync_url
    is_postgres = url.get_backend_name() == "postgresql"
    connect_args = connect_options(settings, statement_timeout=False) if is_postgres else {}
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    with engine.connect() as connection:
        if is_postgres:
            # Runners started together queue here; each later one finds the schema at head.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()
        try:
            _run(connection)
            connection.commit()
        finally:
            if is_postgres:
                connection.rollback()
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                connection.commit()
    engine.dispose()


def run_offline() -> None:
    context.configure(url=settings.sync_url, target_metadata=SQLModel.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
