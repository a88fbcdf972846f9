"""Drills 20-22: continuous WAL archiving and point-in-time restore with pgBackRest
(deploy/postgres/, deploy/scripts/restore.sh --latest | --to, docs/backups.md).

20. Volume lost under load: 8 writers POST through the proxy, each acknowledged write noted with
    its time; after more than one archive_timeout the database container is killed and its
    volume removed (the repository volume survives); ``restore.sh --latest``. Pass: every write
    acknowledged more than archive_timeout before the loss is back, the missing ones all fall in
    the last archive_timeout (the measured window is the figure), readiness 200, the next id is
    above every restored one.
21. Undo a mistake: under the same load, note T, run ``DELETE FROM hero``, ``restore.sh --force
    --to T``. Pass: every hero acknowledged before T is back byte for byte (its row_to_json as
    read just before the DELETE), no hero whose request was sent after T is there, no row that
    was not in the table, the next id is above every restored one, readiness 200.
22. Archiving broken: the repository is made unwritable under load. Pass: within 2 minutes the
    server's pg_stat_archiver shows the failure (what HeroesWalArchiveFailing reads through the
    postgres-exporter) and the pgbackrest service turns unhealthy, every write is still
    acknowledged and in the database; once writable again the failure clears, a full backup is
    taken, and the service is healthy.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from drills.client import Outcome, request_once
from drills.common import Context, DrillResult, LoadRun, db_ages, expect_answers, wait_for
from drills.pitr import (
    SERVICES,
    WRITERS,
    archive_timeout,
    health,
    kill_database,
    metrics,
    remove_data,
    restore,
    wal,
    writers,
)
from drills.stack import Stack, log

TITLE_LOST = "Volume lost under load: restore.sh --latest from the WAL archive (RPO)"
TITLE_UNDO = "Undo a mistake: DELETE FROM hero under load, restore.sh --to T"
TITLE_BROKEN = "Archiving broken: repository unwritable, health turns bad, writes go on"


def rows(stack: Stack) -> dict[int, str]:
    """Every hero row as PostgreSQL's own JSON text."""
    out = stack.psql("SELECT id, row_to_json(h)::text FROM hero h ORDER BY id")
    return {int(i): text for i, _, text in (line.partition("|") for line in out)}


def after_restore(ctx: Context, result: DrillResult, prefix: str) -> dict[str, Any]:
    """Readiness through the proxy, and the next POST's id above every restored id."""
    url = ctx.refresh_url()
    ready = request_once(url, "GET", "/health/ready", timeout=5)
    result.expect(ready.status == 200, f"readiness {ready.status} after the restore")
    top = int(ctx.stack.psql("SELECT coalesce(max(id), 0) FROM hero")[0])
    auth = {"Authorization": f"Bearer {ctx.stack.tokens()[0]}"}
    new = request_once(
        url, "POST", "/heroes/", {"name": f"{prefix}-next", "secret_name": "n"}, auth
    )
    new_id = int(new.json()["id"]) if new.outcome is Outcome.OK else -1
    result.expect(new_id > top, f"next POST got id {new_id}, not above {top}")
    health_ok = wait_for(lambda: health(ctx.stack) == "healthy", timeout=120)
    result.expect(health_ok is not None, "the pgbackrest service is not healthy after the restore")
    return {"next_id": new_id, "max_restored_id": top}


@pytest.mark.drill(20, TITLE_LOST, stage="replaces-data", services=SERVICES)
def test_pitr_volume_lost(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d20-{ctx.run_id}"
    timeout = archive_timeout(stack)
    log(f"drill 20: {WRITERS} writers for {timeout + 15}s (archive_timeout {timeout}s)")
    load = writers(ctx, prefix, seconds=timeout + 60)
    try:
        time.sleep(timeout + 15)  # archive_timeout's timer: a segment archived by time, not size
        before = wal(stack)
        lost_at, volume = kill_database(stack)
    finally:
        run = LoadRun(load.stop())
    remove_data(stack, volume)
    log(f"drill 20: database container and volume {volume} gone; restore.sh --latest")
    restore_s, done = restore(stack, "--latest")

    present = set(db_ages(stack, prefix))
    acked = {r.name: r.ended for r in run.of(Outcome.OK) if r.op == "POST"}
    missing = {name: lost_at - ended for name, ended in acked.items() if name not in present}
    window = max(missing.values(), default=0.0)
    last_archived = before["last_archived"]
    result.expect(len(acked) > 100, f"only {len(acked)} writes acknowledged before the loss")
    result.expect(
        window <= timeout + 5,
        f"{len(missing)} acknowledged writes missing, the oldest acknowledged {window:.1f}s "
        f"before the loss (archive_timeout {timeout}s)",
    )
    result.figures.update(
        after_restore(ctx, result, prefix), acked=len(acked), missing=len(missing),
        window_s=round(window, 1), archive_timeout_s=timeout, restore_s=round(restore_s, 1),
        last_archived_before_loss_s=round(lost_at - last_archived, 1),
        committed_unacked=len(present - set(acked)), restore_line=done,
    )  # fmt: skip
    f = result.figures
    result.summary = (
        f"{f['acked']} writes acknowledged by {WRITERS} writers before the database container "
        f"and its volume were destroyed; restore.sh --latest {f['restore_s']}s (restore, replay, "
        f"migrate, api ready); {f['missing']} acknowledged writes missing, all within the last "
        f"{f['window_s']}s before the loss (archive_timeout {timeout}s; last segment archived "
        f"{f['last_archived_before_loss_s']}s before it); next id {f['next_id']} > "
        f"{f['max_restored_id']}"
    )


@pytest.mark.drill(21, TITLE_UNDO, stage="replaces-data", services=SERVICES)
def test_pitr_undo_mistake(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d21-{ctx.run_id}"
    log(f"drill 21: {WRITERS} writers, T, a DELETE of every hero, restore.sh --force --to T")
    load = writers(ctx, prefix, seconds=60)
    try:
        expect_answers(result, load, 5 * WRITERS, "before T")
        t = time.time()
        expect_answers(result, load, 3 * WRITERS, "after T")
        snapshot = rows(stack)  # rows never change once written: what each was at T
        deleted = stack.psql("WITH d AS (DELETE FROM hero RETURNING 1) SELECT count(*) FROM d")
        expect_answers(result, load, WRITERS, "after the DELETE")
    finally:
        run = LoadRun(load.stop())
    target = datetime.fromtimestamp(t, UTC).isoformat(sep=" ", timespec="microseconds")
    restore_s, done = restore(stack, "--force", "--to", target)

    after = rows(stack)
    names = {
        int(i): n
        for i, _, n in (ln.partition("|") for ln in stack.psql("SELECT id, name FROM hero"))
    }
    present = set(names.values())
    posts = [r for r in run.requests if r.op == "POST"]
    acked_before = {r.name for r in posts if r.outcome is Outcome.OK and r.ended < t}
    sent_after = {r.name for r in posts if r.sent is not None and r.sent > t}
    straddling = {r.name for r in posts if r.outcome is Outcome.OK and r.ended >= t} - sent_after
    lost = acked_before - present
    extra = sent_after & present
    differ = [i for i, text in after.items() if snapshot.get(i) != text]
    older = [i for i, text in snapshot.items() if not _ours(text, prefix)]
    result.expect(bool(acked_before), "no write acknowledged before T")
    result.expect(not lost, f"{len(lost)} heroes acknowledged before T missing: {sorted(lost)[:5]}")
    result.expect(not extra, f"{len(extra)} heroes sent after T present: {sorted(extra)[:5]}")
    result.expect(not differ, f"{len(differ)} rows not byte for byte as before: {differ[:5]}")
    missing_older = [i for i in older if i not in after]
    result.expect(not missing_older, f"{len(missing_older)} rows from before this drill missing")
    result.figures.update(
        after_restore(ctx, result, prefix), acked_before_t=len(acked_before),
        sent_after_t=len(sent_after), straddling_t=len(straddling),
        straddling_present=len(straddling & present), rows_deleted=int(deleted[0]),
        rows_restored=len(after), older_rows=len(older), restore_s=round(restore_s, 1),
        target=target, restore_line=done,
    )  # fmt: skip
    f = result.figures
    result.summary = (
        f"DELETE removed {f['rows_deleted']} rows under load; restore.sh --to T "
        f"{f['restore_s']}s: {f['rows_restored']} rows back byte for byte, all "
        f"{f['acked_before_t']} heroes acknowledged before T present, none of the "
        f"{f['sent_after_t']} sent after T ({f['straddling_present']} of {f['straddling_t']} in "
        f"flight at T committed before it); next id {f['next_id']} > {f['max_restored_id']}"
    )


def _ours(row_json: str, prefix: str) -> bool:
    return f'"name":"{prefix}-' in row_json


@pytest.mark.drill(22, TITLE_BROKEN, stage="replaces-data", services=SERVICES)
def test_pitr_archive_broken(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d22-{ctx.run_id}"
    db = stack.container("db")
    result.expect(health(stack) == "healthy", "the pgbackrest service is not healthy to begin with")
    # The series the alert rules use (docs/backups.md, backup health).
    contract = (
        'pgbackrest_backup_since_last_completion_seconds{backup_type="full"',
        "pgbackrest_repo_status{",
        'pgbackrest_exporter_status{stanza="all-stanzas"}',
    )

    def found_now() -> dict[str, list[float]]:
        series = metrics(stack)
        return {c: [v for n, v in series.items() if n.startswith(c)] for c in contract}

    # On a fresh stack the exporter may have collected before the first backup: its next
    # collection comes within HEROES_PITR_EXPORTER_INTERVAL (60 s).
    wait_for(lambda: all(found_now().values()), timeout=75, interval=2)
    found = found_now()
    result.expect(all(found.values()), f"the exporter lacks one of {contract}")
    result.expect(
        found[contract[2]] == [1.0] and wal(stack)["failing"] == 0,
        f"before the drill: {found}, archiver {wal(stack)}",
    )
    log("drill 22: the repository made unwritable under load")
    load = writers(ctx, prefix, seconds=300)
    try:
        expect_answers(result, load, 2 * WRITERS, "before the repository broke")
        stack.docker("exec", "-u", "0", db, "chmod", "-R", "a-w", "/var/lib/pgbackrest")
        broke = time.monotonic()
        seen: dict[str, float] = {}
        pending = 0.0

        def detected() -> bool:
            nonlocal pending
            if "metric" not in seen:
                gauges = wal(stack)
                pending = max(pending, gauges["pending_bytes"])
                if gauges["failing"] == 1:
                    seen["metric"] = time.monotonic() - broke
            if "health" not in seen and health(stack) == "unhealthy":
                seen["health"] = time.monotonic() - broke
            return len(seen) == 2

        wait_for(detected, timeout=150, interval=1.0)
    finally:
        stack.docker("exec", "-u", "0", db, "chmod", "-R", "u+w", "/var/lib/pgbackrest")
        repaired, repaired_at = time.monotonic(), time.time()
    try:
        # What an operator does once the cause is fixed: switch now instead of waiting for the
        # archiver's next attempt (it retries at the next segment or after 60 s).
        stack.psql("SELECT pg_switch_wal()")
        recovered = wait_for(
            lambda: wal(stack)["failing"] == 0
            and health(stack) == "healthy",
            timeout=180, interval=1.0,
        )  # fmt: skip
    finally:
        run = LoadRun(load.stop())

    def backups() -> list[dict[str, Any]]:
        events = stack.log_events("pgbackrest", since=repaired_at)
        return [e for e in events if e.get("msg") == "full backup written"]

    # The service may turn healthy a few seconds before that backup (taken after it sees the
    # recovery, on its next 5 s pass) is written.
    backup_after = wait_for(lambda: bool(backups()), timeout=90, interval=1.0)
    stored = set(db_ages(stack, prefix))
    acked = run.acked
    failed = [r for r in run.requests if r.outcome is not Outcome.OK]
    result.expect("metric" in seen, "pg_stat_archiver never showed a failure within 150 s")
    result.expect("health" in seen, "the pgbackrest service never turned unhealthy within 150 s")
    result.expect(max(seen.values(), default=999) <= 120, f"detected after {seen} s (> 120 s)")
    result.expect(not failed, f"{len(failed)} writes failed while archiving was broken")
    result.expect(not (acked - stored), f"{len(acked - stored)} acknowledged writes missing")
    result.expect(recovered is not None, "not healthy again within 180 s of the repair")
    result.expect(backup_after is not None, "no full backup within 90 s of archiving recovering")
    result.figures.update(
        metric_after_s=round(seen.get("metric", -1), 1),
        unhealthy_after_s=round(seen.get("health", -1), 1),
        writes_acked=len(acked), writes_failed=len(failed), pending_bytes_max=int(pending),
        healthy_again_after_repair_s=round(recovered or -1, 1),
        broken_for_s=round(repaired - broke, 1),
    )  # fmt: skip
    f = result.figures
    result.summary = (
        f"repository unwritable: archiving failing after {f['metric_after_s']}s, "
        f"service unhealthy after {f['unhealthy_after_s']}s; {f['writes_acked']} writes "
        f"acknowledged and stored meanwhile, {f['writes_failed']} failed; WAL waiting in pg_wal "
        f"up to {f['pending_bytes_max'] // 2**20} MiB (budget 1 GiB); healthy again "
        f"{f['healthy_again_after_repair_s']}s after the repair, with a new full backup"
    )
