"""Drill 11: ``docker compose up --scale api=4``, then back to 2, under the mixed load.

HAProxy finds the new replicas through Docker's DNS (no configuration change) and routes to each
once its readiness checks pass; compose stops the surplus ones with SIGTERM, and each leaves
rotation during its drain. Pass: all four replicas were routed, no request failed, every
acknowledged write readable, two replicas at the end.
"""

from __future__ import annotations

import time

import pytest

from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    describe,
    wait_for,
    warmed_load,
)
from drills.stack import log

TITLE = "Scale 2 -> 4 -> 2 under load"


@pytest.mark.drill(11, TITLE, stage="shared", services=("api", "proxy"))
def test_scaling(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d11-{ctx.run_id}"
    start = len(stack.containers("api"))
    with warmed_load(ctx, prefix) as load:
        log(f"drill 11: docker compose up -d --scale api={2 * start}")
        t0 = time.monotonic()
        stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", f"api={2 * start}",
                      "api", timeout=180)  # fmt: skip
        up = wait_for(
            lambda: len(ids := stack.containers("api")) == 2 * start
            and all(stack.routed(c) for c in ids),
            timeout=90, interval=0.5,
        )  # fmt: skip
        up_s = None if up is None else time.monotonic() - t0
        time.sleep(2.0)
        log(f"drill 11: docker compose up -d --scale api={start}")
        t1 = time.monotonic()
        stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", f"api={start}",
                      "api", timeout=180)  # fmt: skip
        down_s = time.monotonic() - t1
        time.sleep(1.0)
        data = load.stop()
    run_ = LoadRun(data)
    failed = run_.failed
    end = stack.containers("api")
    result.figures.update(
        clients=ctx.clients,
        sent=len(run_.sent),
        failed=len(failed),
        counts=run_.counts(),
        scaled_up_and_routed_s=None if up_s is None else round(up_s, 1),
        scaled_down_s=round(down_s, 1),
        replicas_end=len(end),
        rps=round(run_.rate),
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    result.expect(up_s is not None, f"not all {2 * start} replicas routed within 90 s")
    result.expect(not failed, f"{len(failed)} requests failed: {describe(failed)}")
    result.expect(len(end) == start, f"{len(end)} replicas at the end, want {start}")
    result.summary = (
        f"{ctx.clients} clients: {start} -> {2 * start} replicas, all routed after "
        f"{f['scaled_up_and_routed_s']} s; back to {start} in {f['scaled_down_s']} s; sent "
        f"{f['sent']}, failed {f['failed']}; acked {f['acked']}, in DB {f['in_db']}, lost "
        f"{f['lost']}"
    )
