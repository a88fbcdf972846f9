"""Drill 1: graceful shutdown under write load (``docker compose stop api`` = SIGTERM).

The load runs in a container on the compose network, so the clients talk to the api's own
socket, as a load balancer or a Kubernetes Service would. Through the published port they would
talk to docker-proxy instead, which keeps accepting connections after the api stopped listening
and then closes them: those accept-then-close "failures" never reach the api (see the README,
"Reliability").

Pass: every acknowledged write is in the database; no 5xx, no 4xx, no request lost in flight
(dropped / partial / timeout / reset while sending); no connection refused while the drain
window is still open; readiness answers 503 within the drain window while writes still succeed;
the container exits 0 within its stop grace period.
"""

from __future__ import annotations

import time
from typing import Any

from drills.client import Outcome
from drills.common import Context, DrillResult, LoadRun, check_persistence, describe, warmed_load
from drills.stack import log

TITLE = "Graceful shutdown under write load (SIGTERM)"


def _env(env: list[str], name: str, default: str) -> str:
    for item in env:
        key, _, value = item.partition("=")
        if key == name and value:
            return value
    return default


def run(ctx: Context) -> DrillResult:
    result = DrillResult(1, TITLE)
    stack = ctx.stack
    prefix = f"d1-{ctx.run_id}"
    api = stack.container("api")
    info = stack.inspect(api)
    grace = float(info["Config"].get("StopTimeout") or 10)
    drain = float(_env(info["Config"]["Env"], "SHUTDOWN_DRAIN_SECONDS", "3"))

    with warmed_load(ctx, prefix, poll_interval=0.05) as load:
        log(f"drill 1: docker compose stop api (drain {drain:g}s, grace {grace:g}s)")
        t_stop = time.time()
        stack.compose("stop", "api", timeout=grace + 30)
        t_stopped = time.time()
        time.sleep(0.5)
        data = load.stop()
    run_ = LoadRun(data)
    state = stack.inspect(api)["State"]
    stop_s = t_stopped - t_stop

    ready_503 = [
        p for p in run_.polls_of("/health/ready", since=t_stop) if p.status == 503
    ]  # fmt: skip
    t_503 = ready_503[0].started if ready_503 else None
    ok = run_.of(Outcome.OK)
    served_draining = [r for r in ok if t_503 is not None and r.ended > t_503]
    refused = run_.of(Outcome.NOT_SENT)
    refused_early = [r for r in refused if r.started < t_stop + drain]
    misses = run_.misses
    # The api's own account of the shutdown, to place any miss on its timeline.
    events = stack.log_events("api", since=t_stop)
    marks = {
        "sigterm": _first(events, "Handling signal: term"),
        "listener_closing": _first(events, "Drain over"),
        "workers_exited": _last(events, "Worker exiting"),
    }
    errors_5xx = run_.of(Outcome.SERVER_ERROR)
    errors_4xx = run_.of(Outcome.CLIENT_ERROR, Outcome.OTHER)

    result.figures.update(
        clients=ctx.clients,
        sent=len(run_.sent),
        status_5xx=len(errors_5xx),
        status_4xx=len(errors_4xx),
        in_flight_lost=len(misses),
        refused_after_close=len(refused) - len(refused_early),
        refused_during_drain=len(refused_early),
        stop_s=round(stop_s, 2),
        grace_s=grace,
        exit_code=state["ExitCode"],
        ready_503_after_s=None if t_503 is None else round(t_503 - t_stop, 2),
        drain_s=drain,
        served_while_draining=len(served_draining),
        last_ok_after_s=round(max(r.ended for r in ok) - t_stop, 2) if ok else None,
        rps=round(run_.rate),
        marks_s=_rel(marks, t_stop),
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    result.expect(f["sent"] > 0 and f["acked"] > 0, "no request succeeded")
    result.expect(
        not misses,
        f"{len(misses)} in-flight requests lost: {describe(misses)}; sent at "
        f"{[round((r.sent or r.started) - t_stop, 3) for r in misses[:10]]}s after the stop "
        f"command, shutdown marks {_rel(marks, t_stop)}",
    )
    result.expect(not errors_5xx, f"{len(errors_5xx)} 5xx answers: {describe(errors_5xx)}")
    result.expect(not errors_4xx, f"{len(errors_4xx)} 4xx/other answers: {describe(errors_4xx)}")
    result.expect(
        not refused_early,
        f"{len(refused_early)} connections refused within the drain window (< {drain:g}s): "
        f"{describe(refused_early)} at {[round(r.started - t_stop, 3) for r in refused_early[:5]]}"
        f"s after the stop command, shutdown marks {_rel(marks, t_stop)}",
    )
    result.expect(state["ExitCode"] == 0, f"api exited {state['ExitCode']} (want 0)")
    result.expect(not state.get("OOMKilled"), "api was OOM-killed")
    result.expect(stop_s < grace, f"stop took {stop_s:.1f}s, not within the {grace:g}s grace")
    result.expect(
        t_503 is not None and t_503 - t_stop <= drain,
        f"readiness did not answer 503 within the {drain:g}s drain window "
        f"(first 503 after {f['ready_503_after_s']}s)",
    )
    result.expect(bool(served_draining), "no write succeeded after readiness turned 503")
    result.summary = (
        f"{ctx.clients} clients: sent {f['sent']}, acked {f['acked']}, in DB {f['in_db']}, "
        f"lost {f['lost']}; 5xx {f['status_5xx']}, in-flight lost {f['in_flight_lost']}; "
        f"readiness 503 {f['ready_503_after_s']} s after `stop` (SIGTERM seen at "
        f"{f['marks_s']['sigterm']} s), then {f['served_while_draining']} writes served while "
        f"draining; {f['refused_after_close']} connects refused after the listener closed (at "
        f"{f['marks_s']['listener_closing']} s); exited {f['exit_code']} after {f['stop_s']} s "
        f"(grace {grace:g} s)"
    )
    return result


def _first(events: list[dict[str, Any]], text: str) -> float | None:
    return next((float(e["t"]) for e in events if text in str(e.get("msg"))), None)


def _last(events: list[dict[str, Any]], text: str) -> float | None:
    found = [float(e["t"]) for e in events if text in str(e.get("msg"))]
    return found[-1] if found else None


def _rel(marks: dict[str, float | None], t0: float) -> dict[str, float | None]:
    return {k: None if v is None else round(v - t0, 3) for k, v in marks.items()}
