"""Drill 18: the database's disk fills up, under 8 reading and 8 keyed writing clients.

Two cases, as they happen:

a. PostgreSQL stays up: a relation cannot grow (SQLSTATE 53100, "could not extend file"). The hero
   table is moved to a tablespace on a small filesystem of the drills stack's database
   (deploy/compose.drills.yml), which a filler table then fills. Pass: writes answered 503 (and
   the api's log names the cause), reads keep answering 200, writes back within 5 s of the filler
   being dropped.
b. PostgreSQL stops: its data directory is on a small filesystem of its own (a loop device made
   and mounted on the host, deploy/drills/compose.full-disk.yml, on a stack of its own), which a
   file fills; WAL can no longer be written, PostgreSQL fails and restarts in a loop. Pass: every
   request answered within 8 s (503 while it lasts), writes back within 5 s of PostgreSQL
   accepting connections again once the file is removed.

In both: only 200/409/503, every key answered in the end, nothing acknowledged lost or stored
twice. Needs root (mount) on the host, as the drills' CI does.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from functools import partial
from typing import Any

import pytest

from drills.common import Context, DrillResult, wait_for
from drills.fault_load import Fault, expect_bounded, under_fault
from drills.loop_disk import LoopDisk
from drills.stack import Stack, log

TITLE = "Database disk full: a relation that cannot grow, and PostgreSQL stopped by it"
SMALL = "/var/lib/postgresql/small"  # the drills stack's small filesystem (compose.drills.yml)
FULL_FOR_S = 10.0  # how long the disk stays full
#: Every client is answered within the api's deadlines for a database that does not answer (8 s).
SLOWEST_MAX_S = 8.0
#: Writes succeed again within 5 s of space being freed (or PostgreSQL accepting connections).
WRITES_BACK_S = 5.0
DISK_MB = 200
NO_SPACE = "No space left on device"


def _psql(stack: Stack, sql: str) -> subprocess.CompletedProcess[str]:
    """A statement as the database's superuser; its failure is the caller's to judge."""
    return stack.compose(
        "exec", "-T", "db", "psql", "-U", "heroes", "-d", "heroes", "-Atq", "-c", sql,
        check=False, timeout=120,
    )  # fmt: skip


def _fill_tablespace(stack: Stack) -> Fault:
    _psql(stack, "CREATE TABLE filler (b text) TABLESPACE small")
    # A bulk insert fills most of it fast, but it extends the file many pages at a time, and the
    # chunk that failed is given back: single rows then take what is left, page by page.
    _psql(stack, "INSERT INTO filler SELECT repeat('x', 1800) FROM generate_series(1, 1000000)")
    _psql(stack, "DO $$ BEGIN LOOP INSERT INTO filler VALUES (repeat('x', 1800)); END LOOP; END $$")
    # Under concurrent inserts PostgreSQL extends a table many pages at a time and keeps the spare
    # ones for later rows: the hero table has room left. Rows that are rolled back take it.
    filled = _psql(
        stack,
        "DO $$ BEGIN LOOP INSERT INTO hero (name, secret_name) "
        "VALUES ('d18-filler', repeat('x', 250)); END LOOP; END $$",
    )
    started = time.time()
    log(f"drill 18a: small tablespace full: {filled.stderr.strip()[-160:]}")
    time.sleep(FULL_FOR_S)
    _psql(stack, "DROP TABLE filler")
    log("drill 18a: filler dropped")
    return Fault(started, time.time())


def _relation_cannot_grow(ctx: Context) -> dict[str, Any]:
    stack = ctx.stack
    for sql in (
        "DROP TABLE IF EXISTS filler",
        f"CREATE TABLESPACE small LOCATION '{SMALL}'",
        "ALTER TABLE hero SET TABLESPACE small",
    ):
        proc = _psql(stack, sql)
        if proc.returncode != 0:
            raise RuntimeError(f"{sql}: {proc.stderr.strip()}")
    try:
        since = time.time()
        figures = under_fault(
            ctx, f"d18a-{ctx.run_id}", partial(_fill_tablespace, stack), retry_for=60
        )
        lines = [
            text
            for api in stack.containers("api")
            for _, text in stack.log_lines("api", since=since, container=api)
            if NO_SPACE in text
        ]
        figures["api_log_lines_naming_it"] = len(lines)
        figures["api_log_example"] = lines[0][:200] if lines else None
    finally:
        _psql(stack, "ALTER TABLE hero SET TABLESPACE pg_default")
        _psql(stack, "DROP TABLESPACE small")
    return figures


def _fill_data_disk(stack: Stack, disk: LoopDisk, stopped: dict[str, Any]) -> Fault:
    db = stack.container("db")
    disk.fill()
    started = time.time()
    log("drill 18b: data filesystem full")
    # WAL goes on in its current segment, then in recycled ones: write some in place (an
    # update within its page needs no new block) and switch, until a new segment is needed.
    for _ in range(40):
        _psql(stack, "UPDATE hero SET age = age WHERE id = (SELECT min(id) FROM hero)")
        _psql(stack, "SELECT pg_switch_wal()")
        if _psql(stack, "SELECT 1").returncode != 0:  # PostgreSQL stopped (or restarting)
            break
        time.sleep(0.2)
    stopped["db_failed_after_s"] = round(time.time() - started, 1)
    time.sleep(FULL_FOR_S)
    disk.free()
    freed = time.time()
    log("drill 18b: filler removed")
    # PostgreSQL's own recovery: the restart policy's back-off, then crash recovery.
    back = wait_for(lambda: _psql(stack, "SELECT 1").returncode == 0, timeout=120, interval=0.2)
    stopped["db_back_after_free_s"] = None if back is None else round(back, 1)
    stopped["db_restarts"] = stack.inspect(db)["RestartCount"]
    return Fault(started, freed + (back or 0.0))


def _postgres_stops(ctx: Context) -> dict[str, Any]:
    base = ctx.stack
    with LoopDisk(DISK_MB) as disk:
        pgdata = disk.directory("pgdata", uid=999)  # the postgres image's user
        stack = Stack(
            root=base.root, project=f"{base.project}-disk", image=base.image,
            tokens_file=base.tokens_file,
            files=(*base.files, "deploy/drills/compose.full-disk.yml"),
            extra_env={**base.extra_env, "DRILL_PGDATA": str(pgdata)},
        )  # fmt: skip
        try:
            stack.compose("up", "-d", "--wait", "--wait-timeout", "180", timeout=300)
            own = replace(ctx, stack=stack)
            own.refresh_url()
            stopped: dict[str, Any] = {}
            figures = under_fault(
                own, f"d18b-{ctx.run_id}", partial(_fill_data_disk, stack, disk, stopped),
                retry_for=150, settle=8.0,
            )  # fmt: skip
            figures.update(stopped)
        finally:
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "40", check=False)
    return figures


@pytest.mark.drill(18, TITLE, stage="shared", services=("api", "db"))
def test_full_disk(ctx: Context, result: DrillResult) -> None:
    a = _relation_cannot_grow(ctx)
    result.figures["relation_cannot_grow"] = a
    expect_bounded(result, a, "18a", SLOWEST_MAX_S)
    result.expect(503 in a["write_statuses"], "18a: no write got 503: was the tablespace full?")
    result.expect(
        set(a["read_statuses"]) == {200}, f"18a: reads answered {a['read_statuses']}, want 200"
    )
    result.expect(a["api_log_lines_naming_it"] > 0, f"18a: no api log line says {NO_SPACE!r}")
    result.expect(
        a["writes_back_s"] is not None and a["writes_back_s"] <= WRITES_BACK_S,
        f"18a: writes back {a['writes_back_s']} s after the space was freed",
    )
    b = _postgres_stops(ctx)
    result.figures["postgres_stopped"] = b
    expect_bounded(result, b, "18b", SLOWEST_MAX_S)
    result.expect(503 in b["read_statuses"], "18b: no read got 503: did PostgreSQL stop at all?")
    result.expect(
        b["writes_back_s"] is not None and b["writes_back_s"] <= WRITES_BACK_S,
        f"18b: writes back {b['writes_back_s']} s after PostgreSQL accepted connections again",
    )
    result.summary = (
        f"a (tablespace full, PostgreSQL up): reads {a['read_statuses']}, writes "
        f"{a['write_statuses']}, slowest {a['slowest_s']} s, writes back {a['writes_back_s']} s "
        f"after space freed, {a['acked']} acked, {a['lost']} lost, {a['twice']} twice; "
        f"b (data disk full, PostgreSQL failed after {b.get('db_failed_after_s')} s, "
        f"{b.get('db_restarts')} restarts, back {b.get('db_back_after_free_s')} s after space "
        f"freed): reads {b['read_statuses']}, writes {b['write_statuses']}, slowest "
        f"{b['slowest_s']} s, writes back {b['writes_back_s']} s after it accepted connections, "
        f"{b['acked']} acked, {b['lost']} lost, {b['twice']} twice"
    )
