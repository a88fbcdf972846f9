"""Drill 14: clients that retry with an Idempotency-Key while a worker is killed with SIGKILL.

16 clients POST heroes, each with its own key (the hero's unique name), and send every failed
request again with the same key and body until it is answered. Meanwhile one gunicorn worker is
killed (``kill -9``, as in drill 2): the requests it held fail on the client's side, some of
them after their transaction committed. Without a key such a retry writes the hero a second
time; with one it is answered from the stored answer (``Idempotent-Replayed: true``).

Pass: the kill interrupted requests; every key was eventually answered; every acknowledged hero
is in the database exactly once; no hero is there twice; no 5xx; the worker was replaced.
Bounded: about 3 s warm-up, the replacement (a few seconds), 3 s after it, retries <= 20 s.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

from drills.client import Outcome
from drills.common import Context, DrillResult, LoadRun, Request, wait_for, worker_pids
from drills.load import REPLAYED
from drills.stack import Stack, log
from drills.worker_crash import KILL

TITLE = "Retries with Idempotency-Key across a worker kill -9"
CLIENTS = 16


def _stored_counts(stack: Stack, prefix: str) -> Counter[str]:
    rows = stack.psql(
        f"SELECT name || ' ' || count(*) FROM hero WHERE name LIKE '{prefix}-%' GROUP BY name"  # noqa: S608
    )
    return Counter({name: int(count) for name, count in (row.rsplit(" ", 1) for row in rows)})


def run(ctx: Context) -> DrillResult:
    result = DrillResult(14, TITLE)
    stack = ctx.stack
    prefix = f"d14-{ctx.run_id}"
    load = stack.start_load(prefix, CLIENTS, max_seconds=60, extra=("--idempotent",))
    try:
        load.wait_started()
        time.sleep(ctx.warmup)
        workers = worker_pids(stack)
        kill = json.loads(stack.exec_python("api", KILL))
        victim = kill["victim"]
        log(f"drill 14: killed worker {victim} (of {workers}), it held {kill['held']} connections")
        replaced = wait_for(
            lambda: victim not in (pids := worker_pids(stack)) and len(pids) >= len(workers),
            timeout=30,
        )
        time.sleep(3.0)
        data = load.stop()
    except BaseException:
        load.kill()
        raise
    run_ = LoadRun(data)

    attempts: dict[str, list[Request]] = defaultdict(list)
    for request in run_.requests:
        attempts[request.name].append(request)
    answered = {name for name, tries in attempts.items() if tries[-1].outcome is Outcome.OK}
    retried = {name for name, tries in attempts.items() if len(tries) > 1}
    replayed = {
        name for name, tries in attempts.items()
        if tries[-1].outcome is Outcome.OK and tries[-1].snippet == REPLAYED
    }  # fmt: skip
    failed = [r for r in run_.requests if r.outcome is not Outcome.OK]
    stored = _stored_counts(stack, prefix)
    twice = {name: n for name, n in stored.items() if n > 1}
    missing = answered - set(stored)
    unsent = set(stored) - set(attempts)
    result.figures.update(
        clients=CLIENTS,
        keys=len(attempts),
        attempts=len(run_.requests),
        failed_attempts=len(failed),
        failed_kinds=dict(Counter(r.outcome.value for r in failed)),
        status_409=sum(r.status == 409 for r in failed),
        in_flight_on_victim=kill["held"],
        keys_retried=len(retried),
        retries_replayed=len(replayed),
        answered=len(answered),
        in_db=len(stored),
        in_db_twice=len(twice),
        acked_missing=len(missing),
        replaced_after_s=None if replaced is None else round(replaced, 2),
        rps=round(run_.rate),
    )
    f = result.figures
    result.expect(replaced is not None, f"worker {victim} was not replaced within 30s")
    result.expect(bool(failed), "the kill interrupted no request: nothing was retried")
    unanswered = sorted(set(attempts) - answered)
    result.expect(not unanswered, f"{len(unanswered)} keys never answered: {unanswered[:5]}")
    result.expect(not missing, f"{len(missing)} acknowledged heroes missing: {sorted(missing)[:5]}")
    result.expect(
        not twice, f"{len(twice)} heroes stored more than once: {sorted(twice.items())[:5]}"
    )
    result.expect(not unsent, f"{len(unsent)} heroes in the database were never sent")
    result.expect(
        not run_.of(Outcome.SERVER_ERROR), f"{len(run_.of(Outcome.SERVER_ERROR))} 5xx answers"
    )
    result.summary = (
        f"{CLIENTS} clients, {f['keys']} keys, {f['attempts']} attempts: "
        f"{f['failed_attempts']} failed ({f['failed_kinds']}), {f['keys_retried']} keys retried, "
        f"{f['retries_replayed']} answered by replay; {f['answered']} acked, {f['in_db']} in DB, "
        f"{f['in_db_twice']} twice, "
        f"{f['acked_missing']} lost; worker replaced after {f['replaced_after_s']} s"
    )
    return result
