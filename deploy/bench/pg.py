"""The benchmark's PostgreSQL: harness.postgres's throwaway server with the settings every app
under test gets, and what the benchmark asks of it (seed, sessions, version)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from harness.postgres import PostgresServer
from harness.procs import ProcessRegistry

# Same for every app (besides the harness's: durability off, 200 connections, enough for
# 3 apps x 2 workers x 15 pooled connections even if an old server is still draining).
SERVER_SETTINGS = {
    "shared_buffers": "256MB",
    "log_min_messages": "warning",
    "autovacuum": "on",
}

SEED_SQL = """
INSERT INTO hero (name, secret_name, age)
SELECT 'Hero ' || g, 'Secret identity ' || g, CASE WHEN g %% 10 = 0 THEN NULL ELSE 18 + g %% 60 END
FROM generate_series(1, %(count)s) AS g
"""


def server(workdir: Path, registry: ProcessRegistry) -> PostgresServer:
    """Not started; its directory in ``workdir``, its pid in ``registry`` (bench.sh's trap)."""
    return PostgresServer(settings=SERVER_SETTINGS, parent=workdir, registry=registry)


def version(pg: PostgresServer) -> str:
    with psycopg.connect(pg.url(driver="postgresql")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def sessions(pg: PostgresServer, dbname: str) -> int:
    """Connections ever established to ``dbname`` (pg_stat_database.sessions, PostgreSQL 14+);
    asked from the ``postgres`` database, so the asking is not counted."""
    with psycopg.connect(pg.url(driver="postgresql")) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (dbname,)
        ).fetchone()
    return int(row[0]) if row else 0


def seed(pg: PostgresServer, dbname: str, count: int) -> None:
    """Insert ``count`` heroes with ids 1..count, then VACUUM ANALYZE so plans and
    visibility maps are the same for every app and autovacuum does not start mid-run."""
    with psycopg.connect(pg.url(dbname, driver="postgresql"), autocommit=True) as conn:
        existing = conn.execute("SELECT count(*) FROM hero").fetchone()
        if existing is None or existing[0] != 0:
            raise RuntimeError(f"table hero in {dbname} is not empty before seeding")
        conn.execute(SEED_SQL, {"count": count})
        conn.execute("VACUUM ANALYZE hero")
        conn.execute("CHECKPOINT")
        top = conn.execute("SELECT min(id), max(id) FROM hero").fetchone()
    if top != (1, count):
        raise RuntimeError(f"seeded ids are {top}, expected (1, {count})")
