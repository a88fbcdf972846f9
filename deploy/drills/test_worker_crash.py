"""Drill 2: ``kill -9`` of one gunicorn worker under write load.

The worker is chosen and killed from inside the api container (the image has no ps: the workers
are the children of PID 1, found through /proc). At the moment of the kill the script also counts
the worker's established client connections on port 8000: with HTTP/1.1 each holds at most one
request, so that count bounds "the requests in flight on that worker".

The load goes through the proxy: a write in flight on the killed worker is answered 502 by
HAProxy (it is never replayed: the worker may have committed it); a read in flight is retried on
another replica, so it does not fail.

Pass: the master replaces the worker; the other worker keeps answering meanwhile; failed
requests <= connections held by the killed worker, all sent before the kill, none of them a read;
no 5xx but those 502s; every acknowledged write is in the database; the container was not
restarted.
"""

from __future__ import annotations

import json
import time

import pytest

from drills.client import Outcome, request_once
from drills.common import (
    KILL,
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    describe,
    expect_answers,
    warmed_load,
    worker_pids,
)
from drills.stack import Stack, log

TITLE = "Worker crash (kill -9 one gunicorn worker)"


@pytest.mark.drill(2, TITLE, stage="shared")
def test_worker_crash(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d2-{ctx.run_id}"
    api = stack.container("api")
    before = stack.inspect(api)
    with warmed_load(ctx, prefix) as load:
        kill = json.loads(stack.exec_python("api", KILL))
        t_kill, victim, workers = kill["t"], kill["victim"], kill["workers"]
        log(f"drill 2: killed worker {victim} (of {workers}), it held {kill['held']} connections")
        replaced_at: float | None = None
        new_pids: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = worker_pids(stack)
            if victim not in pids and len(pids) >= len(workers):
                replaced_at = time.time()
                new_pids = sorted(set(pids) - set(workers))
                break
            time.sleep(0.1)
        t_serving = _startup_complete(stack, new_pids, since=t_kill, timeout=20)
        # The load's keep-alive connections stay on the surviving worker; new connections are
        # what a fresh worker gets. Open some until one is answered by the replacement.
        served_by_new = _probe(stack, ctx.api_url, new_pids, since=t_kill)
        expect_answers(result, load, 2 * ctx.clients, "after the worker's replacement")
        data = load.stop()
    run_ = LoadRun(data)
    after = stack.inspect(api)

    failed = run_.failed
    # A read whose answer had begun when the worker died cannot be replayed by any proxy (the
    # client already has part of it): counted apart. Any other failed read is a miss.
    partial_reads = [r for r in failed if r.is_read and r.outcome is Outcome.PARTIAL]
    failed_reads = [r for r in failed if r.is_read and r.outcome is not Outcome.PARTIAL]
    other_5xx = [r for r in run_.of(Outcome.SERVER_ERROR) if r.status != 502]
    late = [r for r in failed if (r.sent or r.started) > t_kill + 0.5]
    gap_ok = [
        r for r in run_.of(Outcome.OK) if t_kill < r.ended < (t_serving or replaced_at or t_kill)
    ]  # fmt: skip
    result.figures.update(
        clients=ctx.clients,
        sent=len(run_.sent),
        failed=len(failed),
        failed_kinds=run_.counts(),
        in_flight_on_victim=kill["held"],
        failed_late=len(late),
        failed_reads=len(failed_reads),
        reads_cut_mid_answer=len(partial_reads),
        status_5xx_not_502=len(other_5xx),
        replaced_after_s=None if replaced_at is None else round(replaced_at - t_kill, 2),
        new_worker_ready_after_s=None if t_serving is None else round(t_serving - t_kill, 2),
        served_by_replacement=served_by_new,
        served_meanwhile=len(gap_ok),
        restart_count=after["RestartCount"],
        rps=round(run_.rate),
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    result.expect(replaced_at is not None, f"worker {victim} was not replaced within 30s")
    result.expect(t_serving is not None, "the replacement worker did not start its application")
    result.expect(served_by_new > 0, "the replacement worker answered none of 60 new connections")
    result.expect(
        len(failed) <= kill["held"],
        f"{len(failed)} requests failed, more than the {kill['held']} in flight on the "
        f"killed worker: {describe(failed)}",
    )
    result.expect(not late, f"{len(late)} requests failed after the kill: {describe(late)}")
    result.expect(not failed_reads, f"{len(failed_reads)} reads failed: {describe(failed_reads)}")
    result.expect(not other_5xx, f"{len(other_5xx)} 5xx other than 502: {describe(other_5xx)}")
    result.expect(bool(gap_ok), "no request succeeded while the worker was being replaced")
    result.expect(
        after["State"]["Running"] and after["RestartCount"] == before["RestartCount"]
        and after["State"]["StartedAt"] == before["State"]["StartedAt"],
        "the api container was restarted",
    )  # fmt: skip
    result.summary = (
        f"{ctx.clients} clients: sent {f['sent']}, acked {f['acked']}, in DB {f['in_db']}, "
        f"lost {f['lost']}; failed {f['failed']} (in flight on the killed worker: "
        f"{f['in_flight_on_victim']}), no read failed before its answer began (cut mid-answer: "
        f"{f['reads_cut_mid_answer']}); replaced after {f['replaced_after_s']} s, replacement "
        f"ready after {f['new_worker_ready_after_s']} s; {f['served_meanwhile']} writes served "
        "meanwhile"
    )


def _startup_complete(stack: Stack, pids: list[int], since: float, timeout: float) -> float | None:
    """When the replacement's application finished starting (its uvicorn log line)."""
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        for event in stack.log_events("api", since=since):
            if event.get("pid") in pids and "startup complete" in str(event.get("msg")):
                return float(event["t"])
        time.sleep(0.3)
    return None


def _probe(stack: Stack, url: str, pids: list[int], since: float, attempts: int = 60) -> int:
    """GETs on new connections; how many the replacement answered (its access-log lines)."""
    for _ in range(attempts):
        request_once(url, "GET", "/heroes/?limit=1", timeout=5)
        time.sleep(0.02)
    return sum(
        1
        for event in stack.log_events("api", since=since)
        if event.get("logger") == "heroes.access" and event.get("pid") in pids
    )
