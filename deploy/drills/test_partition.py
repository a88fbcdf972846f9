"""Drills 16 and 17: network partitions, packets dropped (``docker network disconnect``), sockets
left open and silent: nothing refuses, nothing resets, only the clients' own deadlines can act.

16. The database cut off the api replicas for 20 s, then for 60 s, under 8 reading clients and 8
    writing clients that send an Idempotency-Key and retry every failed attempt with it. Pass: no
    answer slower than 8 s (the api's deadlines: the kernel gives up on a silent connection after
    DB_NETWORK_TIMEOUT, a request waits DB_POOL_TIMEOUT at most for a connection); only 200, 503
    (and 409 for a keyed retry that overtook its first attempt) answered; reads answered 200 again
    within READS_BACK_S of the heal and every replica routed by the proxy again (it took them out
    while their readiness failed) within ROUTED_BACK_S; every acknowledged write stored, none twice.
17. One api replica cut off the proxy's network for 15 s under the mixed load. Pass: the proxy
    marks it down within its health-check window; no answer slower than that window plus 2 s
    (the requests in flight on the lost replica end when the kernel gives their silent
    connections up, haproxy.cfg srvtcpka and tcp-ut: GETs are retried on the other replica,
    writes answered 503 with Retry-After, outcome unknown); only 200 and 503 answered (503 with
    Retry-After), nothing left unanswered but writes on kept-alive connections (HAProxy closes
    those so that the client decides) and answers cut mid-way (counted apart, as in drills 2 and
    10), no request sent after it was marked down failed; the replica is routed to again once
    the partition heals.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial

import pytest

from drills.client import Outcome
from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    describe,
    expect_answers,
    proxy_slots,
    wait_for,
    warm_up,
)
from drills.fault_load import CLIENTS, Fault, expect_bounded, under_fault
from drills.stack import log

TITLE_DB = "Database partitioned from the api (20 s, 60 s) under keyed writes and reads"
TITLE_REPLICA = "One api replica partitioned from the proxy under load"
PARTITIONS_S = (20.0, 60.0)
#: Drill 16: every client is answered within the api's deadlines for a silent database (8 s:
#: docs/reliability.md, "Quiet faults").
SLOWEST_MAX_S = 8.0
#: Reads are answered 200 again within one request deadline of the heal: a read in flight then
#: waits out its deadline, as the pool reconnects only when a new request asks (figures:
#: docs/reliability.md, "What the drills found").
READS_BACK_S = 4.0
#: Every replica is back in the proxy's rotation within 8 s of the heal: its pool reconnects,
#: then two readiness checks pass.
ROUTED_BACK_S = 8.0
#: HAProxy's health-check window for a silent replica (fall 3 checks, each ending at `timeout
#: connect` 1 s, at `inter` 500 ms then `fastinter` 250 ms) and its `timeout server`.
MARKED_DOWN_MAX_S = 5.0
#: Drill 17: every client is answered within that window plus 2 s, as the proxy gives a silent
#: server connection up after about 3 s and sends a read to the other replica.
REPLICA_SLOWEST_MAX_S = MARKED_DOWN_MAX_S + 2.0
REPLICA_PARTITION_S = 15.0


def _partition_db(ctx: Context, seconds: float, routing: dict[str, float | None]) -> Fault:
    stack = ctx.stack
    replicas = stack.containers("api")
    with stack.partitioned(stack.container("db"), stack.network()) as cut:
        log(f"drill 16: database partitioned for {seconds:.0f} s")
        # Readiness fails (within READY_TIMEOUT), so the proxy takes every replica out.
        routing["out_after_s"] = wait_for(
            lambda: not any(stack.routed(c) for c in replicas), timeout=seconds
        )
        time.sleep(max(0.0, cut + seconds - time.time()))
    healed = time.time()
    log("drill 16: partition healed")
    routing["back_after_s"] = wait_for(lambda: all(stack.routed(c) for c in replicas), timeout=15)
    return Fault(cut, healed)


@pytest.mark.drill(16, TITLE_DB, stage="shared", services=("api", "db", "proxy"))
def test_partition_database(ctx: Context, result: DrillResult) -> None:
    runs = []
    for i, seconds in enumerate(PARTITIONS_S):
        routing: dict[str, float | None] = {}
        fault = partial(_partition_db, ctx, seconds, routing)
        # Retries go on well past the heal: every key must end answered.
        f = under_fault(ctx, f"d16{i}-{ctx.run_id}", fault, retry_for=seconds + 30)
        f.update({k: None if v is None else round(v, 2) for k, v in routing.items()})
        runs.append(f)
    result.figures["partitions"] = runs
    for f in runs:
        what = f"{f['fault_s']:.0f} s partition"
        expect_bounded(result, f, what, SLOWEST_MAX_S)
        result.expect(f["out_after_s"] is not None, f"{what}: the proxy kept routing to a replica")
        result.expect(
            f["back_after_s"] is not None and f["back_after_s"] <= ROUTED_BACK_S,
            f"{what}: replicas routed again {f['back_after_s']} s after the heal",
        )
        result.expect(503 in f["read_statuses"], f"{what}: no read got 503: was it cut at all?")
        result.expect(
            f["reads_back_s"] is not None and f["reads_back_s"] <= READS_BACK_S,
            f"{what}: reads answered 200 again {f['reads_back_s']} s after the heal",
        )
    result.summary = "; ".join(
        f"{f['fault_s']:.0f} s: slowest {f['slowest_s']} s, reads {f['read_statuses']}, "
        f"keyed writes {f['write_statuses']} ({f['acked']} acked, {f['lost']} lost, "
        f"{f['twice']} twice), replicas out of the proxy {f['out_after_s']} s after the cut, "
        f"reads back {f['reads_back_s']} s and replicas routed {f['back_after_s']} s after the heal"
        for f in runs
    )


@pytest.mark.drill(17, TITLE_REPLICA, stage="shared", services=("api", "proxy"))
def test_partition_replica(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d17-{ctx.run_id}"
    victim = stack.containers("api")[-1]
    slots = proxy_slots(stack, victim)
    edge = next(n for n in stack.inspect(victim)["NetworkSettings"]["Networks"] if "edge" in n)
    load = stack.start_load(prefix, clients=CLIENTS)
    try:
        load.wait_started()
        warm_up(ctx, load, clients=CLIENTS)
        with stack.partitioned(victim, edge) as cut:
            log(f"drill 17: replica {victim[:12]} partitioned from the proxy")
            down = wait_for(lambda: not stack.routed(victim), timeout=REPLICA_PARTITION_S)
            time.sleep(max(0.0, REPLICA_PARTITION_S - (time.time() - cut)))
        healed = time.time()
        back = wait_for(lambda: stack.routed(victim), timeout=30)
        expect_answers(result, load, 2 * CLIENTS, "after the heal")
        data = load.stop()
    except BaseException:
        load.kill()
        raise
    run_ = LoadRun(data)
    during = [r for r in run_.requests if r.started >= cut - 1.0]
    statuses = Counter(r.status for r in during)
    slowest = max((r.latency for r in during), default=0.0)
    # Requests sent after the replica was marked down: none of them may have waited on it.
    after_down = [
        r for r in run_.requests if down is not None and r.started >= cut + down + 0.5
    ]  # fmt: skip
    failed_after_down = [r for r in after_down if r.outcome is not Outcome.OK]
    result.figures.update(
        slots=sorted(slots),
        marked_down_s=None if down is None else round(down, 2),
        routed_again_s=None if back is None else round(back, 2),
        requests=len(during),
        statuses=dict(statuses),
        writes_closed_unanswered=sum(
            1 for r in during if not r.status and r.outcome is not Outcome.PARTIAL
        ),
        cut_mid_answer=sum(1 for r in during if r.outcome is Outcome.PARTIAL),
        slowest_s=round(slowest, 2),
        failed_after_down=len(failed_after_down),
        healed_at=healed,
    )
    f = result.figures
    result.expect(
        down is not None and down <= MARKED_DOWN_MAX_S,
        f"the proxy routed to the partitioned replica for {f['marked_down_s']} s",
    )
    result.expect(slowest <= REPLICA_SLOWEST_MAX_S, f"an answer took {f['slowest_s']} s")
    answered = [r for r in during if r.status]
    others = [r for r in answered if r.status not in (200, 503)]
    result.expect(not others, f"{len(others)} answers other than 200 and 503: {describe(others)}")
    bare_503 = [r for r in answered if r.status == 503 and not r.retry_after]
    result.expect(not bare_503, f"{len(bare_503)} 503 without Retry-After: {describe(bare_503)}")
    # No answer at all: only a write (never replayed) that went out on a kept-alive client
    # connection, which HAProxy closes unanswered when its reused server connection fails, so
    # that the client decides (docs/load-balancing.md, "A replica that vanishes").
    # A read whose answer had begun when the replica went silent is cut (no proxy can resend
    # it): counted apart, as drills 2 and 10 do.
    unanswered = [r for r in during if not r.status and r.outcome is not Outcome.PARTIAL]
    wrong = [r for r in unanswered if r.op not in ("POST", "PATCH") or r.fresh]
    result.expect(
        not wrong, f"{len(wrong)} reads or fresh connections unanswered: {describe(wrong)}"
    )
    result.expect(
        not failed_after_down,
        f"{len(failed_after_down)} requests failed after it was marked down: "
        f"{describe(failed_after_down)}",
    )
    result.expect(back is not None, "the replica was not routed to again within 30 s of the heal")
    result.summary = (
        f"{CLIENTS} clients: marked down {f['marked_down_s']} s after the cut, routed again "
        f"{f['routed_again_s']} s after the heal; {f['requests']} requests {f['statuses']}, "
        f"slowest {f['slowest_s']} s (bound {REPLICA_SLOWEST_MAX_S:g} s), writes closed unanswered "
        f"on kept-alive connections {f['writes_closed_unanswered']}, cut mid-answer "
        f"{f['cut_mid_answer']}, failed after it was marked "
        f"down {f['failed_after_down']}"
    )
