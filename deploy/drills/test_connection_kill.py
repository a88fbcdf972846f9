"""Drill 15: every API connection to PostgreSQL is killed, twice, under a read load.

``pg_terminate_backend`` on every backend whose application_name is ``heroes`` (what a failover,
a restart of a connection pooler or an operator's kill looks like to the API), while 16 clients
GET one hero and list pages through the proxy. Pass: at most 2 failed requests in all (a read on
a dead connection is sent once more on a fresh one; idle dead connections are found before use),
a 200 within 1 s of each kill, and no worker or container restarted.
"""

from __future__ import annotations

import time

import pytest

from drills.client import Outcome
from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    describe,
    expect_answers,
    warm_up,
    worker_pids,
)
from drills.stack import log

TITLE = "Every database connection killed, twice, under read load"
CLIENTS = 16
KILLS = 2
#: At most 2 failed requests in all: a read that broke is sent once more, idle dead connections
#: are found before use.
FAILED_MAX = 2
#: The API answers 200 again within 1 s of each kill.
RECOVERY_TARGET_S = 1.0
TERMINATE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name = 'heroes' AND pid <> pg_backend_pid()"
)


@pytest.mark.drill(15, TITLE, stage="shared", services=("api", "db"))
def test_connection_kill(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    workers_before = worker_pids(stack)
    load = stack.start_load(f"d15-{ctx.run_id}", clients=CLIENTS, ops=("GET", "LIST"))
    kills: list[tuple[float, int]] = []
    try:
        load.wait_started()
        warm_up(ctx, load, clients=CLIENTS)
        for _ in range(KILLS):
            proc = stack.compose(
                "exec", "-T", "db", "psql", "-qAt", "-U", "heroes", "-d", "heroes", "-c",
                TERMINATE, timeout=30,
            )  # fmt: skip
            kills.append((time.time(), int(proc.stdout.strip() or 0)))
            log(f"drill 15: terminated {kills[-1][1]} api connections")
            # Reads answered again after the kill (every client twice) before the next one.
            expect_answers(result, load, 2 * CLIENTS, "after a kill")
        data = load.stop()
    except BaseException:
        load.kill()
        raise
    run_ = LoadRun(data)
    first_kill = kills[0][0]
    reads = [r for r in run_.requests if r.started >= first_kill - 1.0]
    failed = [r for r in reads if r.outcome is not Outcome.OK]
    recoveries = []
    for moment, _ in kills:
        ok_after = [r.ended for r in run_.of(Outcome.OK) if r.ended >= moment]
        recoveries.append(round(min(ok_after) - moment, 3) if ok_after else None)
    workers_after = worker_pids(stack)
    result.figures.update(
        clients=CLIENTS,
        connections_terminated=[count for _, count in kills],
        reads_around_kills=len(reads),
        failed=len(failed),
        first_200_after_kill_s=recoveries,
        workers_replaced=sorted(set(workers_before) - set(workers_after)),
    )
    f = result.figures
    result.expect(all(count > 0 for _, count in kills), "a kill found no api connection")
    result.expect(len(failed) <= FAILED_MAX, f"{len(failed)} failed requests: {describe(failed)}")
    result.expect(
        all(r is not None and r <= RECOVERY_TARGET_S for r in recoveries),
        f"no 200 within {RECOVERY_TARGET_S:g}s of a kill: {recoveries}",
    )
    result.expect(workers_before == workers_after, f"workers died: {f['workers_replaced']}")
    if failed:
        log(f"drill 15: failed: {describe(failed, n=FAILED_MAX + 1)}")
    result.summary = (
        f"{CLIENTS} reading clients, {KILLS} kills of {f['connections_terminated']} api "
        f"connections: {f['reads_around_kills']} requests from the first kill on, failed "
        f"{f['failed']}; first 200 after each kill {f['first_200_after_kill_s']} s"
    )
