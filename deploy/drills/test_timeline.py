"""Drill 39: restore to a time, then to the latest state (timeline-safe restores; pgBackRest
issues #2064 and #2091; deploy/scripts/restore.sh, docs/backups.md).

A mistake under load (``DELETE FROM hero`` after T), then a full backup on the old timeline's
schedule (after the mistake, before the restore: the trap), ``restore.sh --force --to T``, more
writes on the new timeline, the database volume lost, ``restore.sh --latest``. Without a full
backup of the new timeline, --latest would pick the old timeline's newer backup, which PostgreSQL
refuses ("requested timeline is not a child of this server's history") after the data directory
was rewritten. Pass: --latest succeeds; every write acknowledged after the first restore (more
than archive_timeout before the loss) is back; every hero acknowledged before T is back and none
sent after T (the undone mistake stays undone).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from drills.client import Outcome
from drills.common import Context, DrillResult, LoadRun, db_ages, expect_answers
from drills.pitr import (
    SERVICES,
    WRITERS,
    archive_timeout,
    kill_database,
    remove_data,
    restore,
    writers,
)
from drills.stack import log

TITLE = "Restore to T, then to latest: a full backup of the old timeline in between"


@pytest.mark.drill(39, TITLE, stage="replaces-data", services=SERVICES)
def test_restore_to_then_latest(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d39-{ctx.run_id}"
    timeout = archive_timeout(stack)
    load = writers(ctx, f"{prefix}-a", seconds=60)
    try:
        expect_answers(result, load, 5 * WRITERS, "before T")
        t = time.time()
        expect_answers(result, load, 3 * WRITERS, "after T")
        stack.psql("DELETE FROM hero")
        expect_answers(result, load, WRITERS, "after the DELETE")
    finally:
        first = LoadRun(load.stop())
    log("drill 39: a full backup on the old timeline, after the mistake (the daily one's place)")
    stack.compose("exec", "-T", "-u", "postgres", "pgbackrest", "heroes-pgbackrest-env",
                  "pgbackrest", "backup", "--type=full", timeout=300)  # fmt: skip
    target = datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")
    to_s, _ = restore(stack, "--force", "--to", target)
    restored_at = time.time()

    log(f"drill 39: writes on the new timeline for {timeout + 15}s, then the volume lost")
    load = writers(ctx, f"{prefix}-b", seconds=timeout + 60)
    try:
        time.sleep(timeout + 15)  # archive_timeout's timer: the last segment archived
        lost_at, volume = kill_database(stack)
    finally:
        second = LoadRun(load.stop())
    remove_data(stack, volume)
    latest_s, done = restore(stack, "--latest")

    present = set(db_ages(stack, prefix))
    posts = [r for r in first.requests if r.op == "POST"]
    acked_before = {r.name for r in posts if r.outcome is Outcome.OK and r.ended < t}
    sent_after = {r.name for r in posts if r.sent is not None and r.sent > t}
    acked_new = {r.name: r.ended for r in second.of(Outcome.OK) if r.op == "POST"}
    missing_new = {n: lost_at - e for n, e in acked_new.items() if n not in present}
    window = max(missing_new.values(), default=0.0)
    result.expect(bool(acked_before) and len(acked_new) > 50, "too few writes to judge")
    result.expect(
        window <= timeout + 5,
        f"{len(missing_new)} writes acknowledged after the first restore missing, the oldest "
        f"{window:.1f}s before the loss (archive_timeout {timeout}s)",
    )
    result.expect(not (acked_before - present), f"{len(acked_before - present)} heroes "
                  "acknowledged before T missing")  # fmt: skip
    result.expect(not (sent_after & present), f"{len(sent_after & present)} heroes sent after T "
                  "are back: the undone mistake's timeline was followed")  # fmt: skip
    result.figures.update(
        acked_before_t=len(acked_before), sent_after_t=len(sent_after),
        acked_after_first_restore=len(acked_new), missing_after_first_restore=len(missing_new),
        window_s=round(window, 1), archive_timeout_s=timeout, restore_to_s=round(to_s, 1),
        restore_latest_s=round(latest_s, 1), writes_for_s=round(lost_at - restored_at, 1),
        restore_line=done,
    )  # fmt: skip
    f = result.figures
    result.summary = (
        f"mistake at T under load, a full backup on the old timeline after it, restore.sh --to T "
        f"{f['restore_to_s']}s (done once the new timeline had its full backup), "
        f"{f['acked_after_first_restore']} writes on the new timeline, volume lost, --latest "
        f"{f['restore_latest_s']}s: {f['missing_after_first_restore']} of them missing, all in "
        f"the last {f['window_s']}s (archive_timeout {timeout}s); all {f['acked_before_t']} "
        f"acknowledged before T back, none of the {f['sent_after_t']} sent after T"
    )
