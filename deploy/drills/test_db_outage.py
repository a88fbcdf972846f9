"""Drill 3: the database goes away under write load (``docker compose stop db`` for ~10 s).

Pass: while it is down, writes get a JSON 503 quickly (bounded by DB_CONNECT_TIMEOUT +
DB_POOL_TIMEOUT, never a 30 s hang), nothing else (no 500, no dropped connection); liveness stays
200 and readiness turns 503; the api container is not restarted and no worker dies. After the
database is back the API serves again within 1 s (readiness within 2 s: it is polled, through the
proxy); every acknowledged write is stored.
"""

from __future__ import annotations

import time

import pytest

from drills.client import Outcome
from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    describe,
    percentile,
    wait_for,
    warmed_load,
    worker_pids,
)
from drills.stack import log

TITLE = "Database outage under write load"
#: The API serves writes again within 1 s of the database's return.
RECOVERY_TARGET_S = 1.0
#: Readiness is polled every 0.1 s through the proxy, behind its own database query: it may trail
#: the first served request by a poll or two.
READY_RECOVERY_TARGET_S = 2.0
READY_LINE = "database system is ready to accept connections"
#: While the database is down every request is answered (503) within DB_POOL_TIMEOUT (2 s)
#: plus scheduling slack on a 2-core machine, never a hang.
MAX_OUTAGE_ANSWER_S = 5.0


@pytest.mark.drill(3, TITLE, stage="shared", services=("api", "db"))
def test_database_outage(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d3-{ctx.run_id}"
    api = stack.container("api")
    before = stack.inspect(api)
    workers_before = worker_pids(stack)

    def db_ready() -> bool:
        proc = stack.compose(
            "exec", "-T", "db", "pg_isready", "-q", "-h", "127.0.0.1", "-U", "heroes",
            check=False, timeout=10,
        )  # fmt: skip
        return proc.returncode == 0

    with warmed_load(ctx, prefix, poll_interval=0.1) as load:
        log(f"drill 3: docker compose stop db, for {ctx.outage:g}s")
        t_down = time.time()
        stack.compose("stop", "db", timeout=60)
        t_down_done = time.time()
        time.sleep(max(0.0, ctx.outage - (t_down_done - t_down)))
        t_up = time.time()
        stack.compose("start", "db", timeout=60)
        waited = wait_for(db_ready, timeout=60, interval=0.1)
        # When PostgreSQL itself said so (pg_isready through `docker exec` notices it later).
        t_db_ready = min(
            [t for t, text in stack.log_lines("db", since=t_up) if READY_LINE in text]
            + [time.time()]
        )
        log(f"drill 3: database back, accepting connections {t_db_ready - t_up:.1f}s after start")
        time.sleep(RECOVERY_TARGET_S + 4)  # a duration: the load watched over the recovery target
        data = load.stop()
    run_ = LoadRun(data)
    after = stack.inspect(api)
    workers_after = worker_pids(stack)

    during = [r for r in run_.requests if t_down_done <= r.started < t_up]
    answered_503 = [r for r in run_.requests if r.status == 503]
    not_json_503 = [r for r in answered_503 if not r.json_ok]
    wrong_5xx = [r for r in run_.of(Outcome.SERVER_ERROR) if r.status != 503]
    bad_4xx = run_.of(Outcome.CLIENT_ERROR, Outcome.OTHER)
    misses = run_.misses
    refused = run_.of(Outcome.NOT_SENT)
    slowest = max((r.latency for r in during), default=0.0)
    lat_503 = [r.latency for r in answered_503]
    # Recovery: the first write acknowledged after the database accepted connections again (it
    # may have been sent during the outage and waited for a pooled connection).
    first_ok = min((r.ended for r in run_.of(Outcome.OK) if r.ended >= t_db_ready), default=None)
    recovery = None if first_ok is None else max(0.0, first_ok - t_db_ready)
    # Once recovered, it stays recovered: every write started 1 s after the first success is OK.
    flapping = [
        r for r in run_.requests
        if first_ok is not None and r.started > first_ok + 1.0 and r.outcome is not Outcome.OK
    ]  # fmt: skip
    live = run_.polls_of("/health/live")
    live_bad = [p for p in live if p.status != 200]
    ready_down = [p for p in run_.polls_of("/health/ready", t_down_done, t_up) if p.status == 503]
    ready_up = [
        p.started + p.latency
        for p in run_.polls_of("/health/ready", since=t_down_done)
        if p.status == 200 and p.started + p.latency >= t_db_ready
    ]  # fmt: skip
    ready_recovery = max(0.0, min(ready_up) - t_db_ready) if ready_up else None

    result.figures.update(
        clients=ctx.clients,
        outage_s=round(t_up - t_down, 1),
        sent=len(run_.sent),
        during_outage=len(during),
        answered_503=len(answered_503),
        p50_503_s=round(percentile(lat_503, 50), 3),
        max_answer_during_outage_s=round(slowest, 2),
        other_5xx=len(wrong_5xx),
        non_json_503=len(not_json_503),
        in_flight_lost=len(misses),
        refused=len(refused),
        liveness_polls=len(live),
        liveness_not_200=len(live_bad),
        readiness_503_polls=len(ready_down),
        db_ready_after_start_s=None if waited is None else round(t_db_ready - t_up, 2),
        recovery_s=None if recovery is None else round(recovery, 2),
        readiness_recovery_s=None if ready_recovery is None else round(ready_recovery, 2),
        failures_after_recovery=len(flapping),
        restart_count=after["RestartCount"],
        workers_replaced=sorted(set(workers_before) - set(workers_after)),
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    result.expect(waited is not None, "the database did not come back within 60s")
    result.expect(bool(answered_503), "no 503 while the database was down")
    result.expect(not not_json_503, f"{len(not_json_503)} 503 answers were not JSON")
    result.expect(not wrong_5xx, f"{len(wrong_5xx)} 5xx other than 503: {describe(wrong_5xx)}")
    result.expect(not bad_4xx, f"{len(bad_4xx)} 4xx/other answers: {describe(bad_4xx)}")
    result.expect(not misses, f"{len(misses)} requests lost in flight: {describe(misses)}")
    result.expect(not refused, f"{len(refused)} connections refused: {describe(refused)}")
    result.expect(
        slowest <= MAX_OUTAGE_ANSWER_S,
        f"an answer during the outage took {slowest:.1f}s (> {MAX_OUTAGE_ANSWER_S:g}s)",
    )
    result.expect(not live_bad, f"liveness answered non-200 {len(live_bad)} times")
    result.expect(bool(ready_down), "readiness never answered 503 during the outage")
    result.expect(
        recovery is not None and recovery <= RECOVERY_TARGET_S,
        f"no successful write within {RECOVERY_TARGET_S:g}s of the database's return "
        f"(recovery {f['recovery_s']})",
    )
    result.expect(
        ready_recovery is not None and ready_recovery <= READY_RECOVERY_TARGET_S,
        f"readiness not 200 within {READY_RECOVERY_TARGET_S:g}s of the database's return",
    )
    result.expect(not flapping, f"{len(flapping)} failures after recovery: {describe(flapping)}")
    result.expect(
        after["State"]["Running"]
        and after["RestartCount"] == before["RestartCount"]
        and after["State"]["StartedAt"] == before["State"]["StartedAt"],
        "the api container was restarted",
    )
    result.expect(workers_before == workers_after, f"workers died: {f['workers_replaced']}")
    result.summary = (
        f"db down {f['outage_s']}s under {ctx.clients} clients: {f['answered_503']} JSON 503 "
        f"(median {f['p50_503_s']}s, slowest answer {f['max_answer_during_outage_s']}s), "
        f"other 5xx {f['other_5xx']}, lost in flight {f['in_flight_lost']}; liveness non-200 "
        f"{f['liveness_not_200']}/{f['liveness_polls']}; recovered {f['recovery_s']}s after the "
        f"db accepted connections (readiness {f['readiness_recovery_s']}s), restarts "
        f"{f['restart_count']}; acked {f['acked']}, in DB {f['in_db']}, lost {f['lost']}"
    )
