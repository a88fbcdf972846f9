"""Alembic is the only thing that creates tables: no drift, reversible, safe to run concurrently."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from harness.postgres import create_database
from heroes.db import migrate

from .conftest import make_settings

HEAD = "0002"
TABLES = {"hero", "idempotency_key", "alembic_version"}


def _tables_and_revision(url: str) -> tuple[set[str], list[str]]:
    engine = create_engine(make_settings(url).sync_url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            revisions = (
                list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
                if "alembic_version" in tables
                else []
            )
    finally:
        engine.dispose()
    return tables, revisions


def test_models_and_migrations_do_not_drift(empty_url: str) -> None:
    settings = make_settings(empty_url)
    migrate.upgrade(settings)
    command.check(migrate.alembic_config(settings))  # raises if autogenerate finds a difference


def test_upgrade_downgrade_upgrade_round_trip(empty_url: str) -> None:
    settings = make_settings(empty_url)
    migrate.upgrade(settings)
    assert _tables_and_revision(empty_url) == (TABLES, [HEAD])
    migrate.downgrade(settings, "0001")
    assert _tables_and_revision(empty_url) == ({"hero", "alembic_version"}, ["0001"])
    migrate.downgrade(settings, "base")
    assert _tables_and_revision(empty_url) == ({"alembic_version"}, [])
    migrate.upgrade(settings)
    assert _tables_and_revision(empty_url)[1] == [migrate.head_revision(settings)]


def test_migration_history_has_a_single_head(empty_url: str) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(make_settings(empty_url)))
    assert len(script.get_heads()) == 1


def test_upgrade_twice_is_a_no_op(empty_url: str) -> None:
    settings = make_settings(empty_url)
    migrate.upgrade(settings)
    migrate.upgrade(settings)
    assert _tables_and_revision(empty_url)[1] == [HEAD]


@pytest.mark.postgres_only
def test_concurrent_migrations_on_empty_database_all_succeed(pg_admin_url: str) -> None:
    url = create_database(pg_admin_url, "concurrent_migrations")
    env = {**os.environ, "DATABASE_URL": url, "ENVIRONMENT": "development"}
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "heroes", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [runner.communicate(timeout=120)[0] for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0, 0, 0], outputs
    assert sum("Running upgrade  -> 0001" in out for out in outputs) == 1, outputs
    assert _tables_and_revision(url) == (TABLES, [HEAD])
