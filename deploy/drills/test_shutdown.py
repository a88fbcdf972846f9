"""Drill 1: graceful shutdown of one api replica under load (``docker stop`` = SIGTERM), through
the proxy's published port.

The replica drains for SHUTDOWN_DRAIN_SECONDS (readiness 503, still serving, ``Connection:
close``); HAProxy's readiness checks take it out of rotation inside that window, so by the time it
stops listening no request is routed to it. The other replica serves everything meanwhile.

Pass: no failed request at all (no 5xx, 4xx, refused or lost connection); every acknowledged
write readable; the proxy marked the replica DOWN within the drain window; the replica served
requests while draining, exited 0 within its stop grace period; started again, it is back in
rotation.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    describe,
    expect_answers,
    proxy_marked_down,
    proxy_slots,
    wait_for,
    warmed_load,
)
from drills.stack import log

TITLE = "Graceful shutdown of one replica under load (SIGTERM), through the proxy"


def _env(env: list[str], name: str, default: str) -> str:
    for item in env:
        key, _, value = item.partition("=")
        if key == name and value:
            return value
    return default


@pytest.mark.drill(1, TITLE, stage="restarts", services=("api", "proxy"))
def test_sigterm_under_write_load(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d1-{ctx.run_id}"
    victim = stack.container("api")
    info = stack.inspect(victim)
    slots = proxy_slots(stack, victim)
    grace = float(info["Config"].get("StopTimeout") or 10)
    drain = float(_env(info["Config"]["Env"], "SHUTDOWN_DRAIN_SECONDS", "3"))

    with warmed_load(ctx, prefix, poll_interval=0.1) as load:
        log(f"drill 1: docker stop {victim[:12]} (drain {drain:g}s, grace {grace:g}s)")
        t_stop = time.time()
        stack.docker("stop", "-t", f"{grace:.0f}", victim, timeout=grace + 30)
        t_stopped = time.time()
        t_down = proxy_marked_down(stack, t_stop, slots)
        expect_answers(result, load, ctx.clients, "after the stop")
        data = load.stop()
    run_ = LoadRun(data)
    state = stack.inspect(victim)["State"]
    stop_s = t_stopped - t_stop
    events = stack.log_events("api", since=t_stop, container=victim)
    marks = {
        "sigterm": _first(events, "Handling signal: term"),
        "listener_closing": _first(events, "Drain over"),
        "workers_exited": _last(events, "Worker exiting"),
    }
    served_draining = [
        e for e in events if e.get("logger") == "heroes.access" and float(e["t"]) > t_stop
    ]  # fmt: skip
    failed = run_.failed

    log("drill 1: docker start the replica again")
    stack.docker("start", victim)
    back = wait_for(lambda: stack.routed(victim), timeout=60, interval=0.5)

    result.figures.update(
        clients=ctx.clients,
        sent=len(run_.sent),
        failed=len(failed),
        counts=run_.counts(),
        stop_s=round(stop_s, 2),
        grace_s=grace,
        exit_code=state["ExitCode"],
        drain_s=drain,
        proxy_down_after_s=None if t_down is None else round(t_down - t_stop, 2),
        served_while_draining=len(served_draining),
        back_in_rotation_s=None if back is None else round(back, 1),
        rps=round(run_.rate),
        marks_s=_rel(marks, t_stop),
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    result.expect(f["sent"] > 0 and f["acked"] > 0, "no request succeeded")
    result.expect(not failed, f"{len(failed)} requests failed: {describe(failed)}")
    result.expect(state["ExitCode"] == 0, f"api exited {state['ExitCode']} (want 0)")
    result.expect(not state.get("OOMKilled"), "api was OOM-killed")
    result.expect(stop_s < grace, f"stop took {stop_s:.1f}s, not within the {grace:g}s grace")
    result.expect(
        t_down is not None and t_down - t_stop <= drain,
        f"the proxy did not take the replica out within the {drain:g}s drain window "
        f"(DOWN after {f['proxy_down_after_s']}s)",
    )
    result.expect(bool(served_draining), "the replica served nothing after SIGTERM")
    result.expect(back is not None, "the restarted replica was not back in rotation within 60s")
    result.summary = (
        f"{ctx.clients} clients via the proxy: sent {f['sent']}, failed {f['failed']}; acked "
        f"{f['acked']}, in DB {f['in_db']}, lost {f['lost']}; the stopped replica: out of the "
        f"proxy {f['proxy_down_after_s']} s after `docker stop` (drain {drain:g} s), "
        f"{f['served_while_draining']} requests served while draining, exited "
        f"{f['exit_code']} after {f['stop_s']} s (grace {grace:g} s); back in rotation "
        f"{f['back_in_rotation_s']} s after `docker start`"
    )


def _first(events: list[dict[str, Any]], text: str) -> float | None:
    return next((float(e["t"]) for e in events if text in str(e.get("msg"))), None)


def _last(events: list[dict[str, Any]], text: str) -> float | None:
    found = [float(e["t"]) for e in events if text in str(e.get("msg"))]
    return found[-1] if found else None


def _rel(marks: dict[str, float | None], t0: float) -> dict[str, float | None]:
    return {k: None if v is None else round(v - t0, 3) for k, v in marks.items()}
