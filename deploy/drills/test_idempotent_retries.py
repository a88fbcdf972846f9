"""Drill 14: clients that retry with an Idempotency-Key while a worker is killed with SIGKILL.

16 clients POST heroes, each with its own key (the hero's unique name), and send every failed
request again with the same key and body until it is answered. Meanwhile one gunicorn worker is
killed (``kill -9``, as in drill 2): the requests it held fail on the client's side, some of
them after their transaction committed. Without a key such a retry writes the hero a second
time; with one it is answered from the stored answer (``Idempotent-Replayed: true``).

The load (drills.keyed_load) runs on the host against the api's published port.

Pass: the kill interrupted requests (the client retried them, or the proxy resent them to
another worker: a keyed write is idempotent, haproxy.cfg); every key was eventually answered;
every acknowledged hero is in the database exactly once; no hero is there twice; no 5xx (but a
proxy's 502 for a request the killed worker held, retried like a dropped connection); the worker
was replaced.
Bounded: about 3 s warm-up, the replacement (a few seconds), 3 s after it, retries <= 20 s.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import pytest

from drills.common import (
    KILL,
    Context,
    DrillResult,
    expect_answers,
    start_keyed_load,
    stored_counts,
    wait_for,
    warm_up,
    worker_pids,
)
from drills.stack import log

TITLE = "Retries with Idempotency-Key across a worker kill -9"
CLIENTS = 16


@pytest.mark.drill(14, TITLE, stage="shared")
def test_idempotent_retries(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d14-{ctx.run_id}"
    load = start_keyed_load(ctx, prefix)
    try:
        load.wait_started()
        warm_up(ctx, load, clients=CLIENTS)
        workers = worker_pids(stack)
        kill = json.loads(stack.exec_python("api", KILL))
        victim = kill["victim"]
        log(f"drill 14: killed worker {victim} (of {workers}), it held {kill['held']} connections")
        replaced = wait_for(
            lambda: victim not in (pids := worker_pids(stack)) and len(pids) >= len(workers),
            timeout=30,
        )
        # Writes acknowledged after the replacement (every client twice).
        expect_answers(result, load, 2 * CLIENTS, "after the worker's replacement")
        data = load.stop()
    except BaseException:
        load.proc.kill()  # our own child, by its pid
        load.proc.wait(timeout=30)
        raise

    attempts: dict[str, list[list[Any]]] = defaultdict(list)
    for attempt in data["attempts"]:
        attempts[attempt[0]].append(attempt)
    ok = "2xx"
    answered = {key for key, tries in attempts.items() if tries[-1][1] == ok}
    retried = {key for key, tries in attempts.items() if len(tries) > 1}
    replayed = {key for key, tries in attempts.items() if tries[-1][1] == ok and tries[-1][3]}
    failed = [a for a in data["attempts"] if a[1] != ok]
    # The proxy resends a keyed write whose replica closed without answering to another one
    # (haproxy.cfg: retry-on empty-response): then the client sees no failure at all.
    proxy_retried = [
        e for e in stack.log_events("proxy", data["started"])
        if e.get("logger") == "haproxy.access" and e.get("method") == "POST"
        and e.get("retries", 0) > 0 and e.get("status") == 200
    ]  # fmt: skip
    stored = stored_counts(stack, prefix)
    twice = {name: n for name, n in stored.items() if n > 1}
    missing = answered - set(stored)
    unsent = set(stored) - set(attempts)
    # 502 is what a proxy in front answers for a request the killed worker held: retried too.
    server_errors = [a for a in failed if a[1] == "5xx" and a[2] != 502]
    span = data["ended"] - data["started"]
    result.figures.update(
        clients=CLIENTS,
        keys=len(attempts),
        attempts=len(data["attempts"]),
        failed_attempts=len(failed),
        retried_by_proxy=len(proxy_retried),
        failed_kinds=dict(Counter(str(a[2]) if a[2] in (409, 502) else a[1] for a in failed)),
        in_flight_on_victim=kill["held"],
        keys_retried=len(retried),
        retries_replayed=len(replayed),
        answered=len(answered),
        in_db=len(stored),
        in_db_twice=len(twice),
        acked_missing=len(missing),
        replaced_after_s=None if replaced is None else round(replaced, 2),
        rps=round(len(answered) / span) if span > 0 else 0,
    )
    f = result.figures
    result.expect(replaced is not None, f"worker {victim} was not replaced within 30s")
    result.expect(
        bool(failed) or bool(proxy_retried), "the kill interrupted no request: nothing was retried"
    )
    unanswered = sorted(set(attempts) - answered)
    result.expect(not unanswered, f"{len(unanswered)} keys never answered: {unanswered[:5]}")
    result.expect(not missing, f"{len(missing)} acknowledged heroes missing: {sorted(missing)[:5]}")
    result.expect(
        not twice, f"{len(twice)} heroes stored more than once: {sorted(twice.items())[:5]}"
    )
    result.expect(not unsent, f"{len(unsent)} heroes in the database were never sent")
    result.expect(not server_errors, f"{len(server_errors)} 5xx answers other than 502")
    result.summary = (
        f"{CLIENTS} clients, {f['keys']} keys, {f['attempts']} attempts: "
        f"{f['failed_attempts']} failed ({f['failed_kinds']}), {f['keys_retried']} keys retried, "
        f"{f['retried_by_proxy']} resent by the proxy, "
        f"{f['retries_replayed']} answered by replay; {f['answered']} acked, {f['in_db']} in DB, "
        f"{f['in_db_twice']} twice, "
        f"{f['acked_missing']} lost; worker replaced after {f['replaced_after_s']} s"
    )
