"""Drill 10: ``docker kill -s KILL`` of one api replica under the mixed load, through the proxy.

Just before the kill the drill counts the replica's established connections on port 8000 (all
from the proxy, idle pooled ones too): a figure. Docker does not apply the restart policy to a
``docker kill`` (a manual stop for the engine; a process that crashes or is OOM-killed is
restarted), so the drill starts the container again at once, as the policy would after a crash.

Pass: at most as many failures as clients (each client holds one request at a time; in the half
second before the proxy takes the replica out, a client's write can fail and its next one too: a
figure), all of them sent before the kill, none of them a read (HAProxy retries a GET whose server
died; it never replays a write); every acknowledged write readable; the replica back in rotation
within 15 s of the kill. Requests the proxy sheds while the capacity is halved (503 "overloaded",
with Retry-After: its overload bounds, docs/load-balancing.md) never reached a replica: counted
apart, each with Retry-After.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from drills.client import Outcome
from drills.common import (
    ESTABLISHED_8000,
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    describe,
    expect_answers,
    wait_for,
    warmed_load,
)
from drills.stack import Stack, log

TITLE = "Replica killed (docker kill -s KILL) under load, through the proxy"
#: The killed replica is back in the proxy's rotation within 15 s of the kill.
BACK_TARGET_S = 15.0

HELD = ESTABLISHED_8000 + "print(established_8000())\n"
#: In the body of the proxy's load-shedding 503 (deploy/haproxy/haproxy.cfg, backends shed_*).
SHED = "overloaded"


def _client(name: str) -> str:
    """The load client of a request: its hero is named <prefix>-<client>-<seq> (lists: no name)."""
    parts = name.rsplit("-", 2)
    return parts[-2] if len(parts) == 3 else name


def _healthy(stack: Stack, container: str) -> bool:
    state = stack.inspect(container)["State"]
    return bool(state["Running"]) and (state.get("Health") or {}).get("Status") == "healthy"


@pytest.mark.drill(10, TITLE, stage="shared", services=("api", "proxy"))
def test_replica_kill(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d10-{ctx.run_id}"
    victim = stack.container("api")
    with warmed_load(ctx, prefix) as load:
        held = int(stack.exec_in(victim, "python", "-c", HELD).strip())
        t_kill = time.time()
        stack.docker("kill", "-s", "KILL", victim)
        log(f"drill 10: killed replica {victim[:12]}, it held {held} connections")
        stack.docker("start", victim)
        # Routed again *and* healthy since the restart (Docker resets the health status to
        # "starting" on start; the proxy may not have noticed the kill yet at this point).
        back = wait_for(lambda: _healthy(stack, victim) and stack.routed(victim), timeout=45)
        back_s = None if back is None else time.time() - t_kill
        expect_answers(result, load, 2 * ctx.clients, "after the replica was back")
        data = load.stop()
    run_ = LoadRun(data)
    shed = [r for r in run_.failed if r.status == 503 and SHED in r.snippet]
    failed = [r for r in run_.failed if r not in shed]
    # A read whose answer had begun when the replica died cannot be replayed by any proxy (the
    # client already has part of it): counted apart. Any other failed read is a miss.
    partial_reads = [r for r in failed if r.is_read and r.outcome is Outcome.PARTIAL]
    reads = [r for r in failed if r.is_read and r.outcome is not Outcome.PARTIAL]
    late = [r for r in failed if (r.sent or r.started) > t_kill + 0.5]
    result.figures.update(
        clients=ctx.clients,
        sent=len(run_.sent),
        failed=len(failed),
        failed_statuses=sorted({r.status for r in failed}),
        shed=len(shed),
        # What each failure was, as a client sees it (status and the start of the body).
        failed_kinds=dict(Counter(f"{r.status} {r.error or r.snippet[:60]}" for r in failed)),
        counts=run_.counts(),
        in_flight_bound=held,
        failed_reads=len(reads),
        reads_cut_mid_answer=len(partial_reads),
        failed_late=len(late),
        back_in_rotation_s=None if back_s is None else round(back_s, 1),
        rps=round(run_.rate),
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    per_client = Counter(_client(r.name) for r in failed)
    f["clients_that_lost_two"] = sum(1 for n in per_client.values() if n > 1)
    result.expect(
        len(failed) <= ctx.clients,
        f"{len(failed)} requests failed, more than the {ctx.clients} clients: {describe(failed)}",
    )
    result.expect(not reads, f"{len(reads)} reads failed: {describe(reads)}")
    bare = [r for r in shed if not r.retry_after]
    result.expect(not bare, f"{len(bare)} shed without Retry-After: {describe(bare)}")
    result.expect(not late, f"{len(late)} requests failed after the kill: {describe(late)}")
    result.expect(
        back_s is not None and back_s <= BACK_TARGET_S,
        f"the replica was back in rotation after {f['back_in_rotation_s']} s "
        f"(target {BACK_TARGET_S:g} s)",
    )
    result.summary = (
        f"{ctx.clients} clients: sent {f['sent']}, failed {f['failed']} (statuses "
        f"{f['failed_statuses']}; the replica held {held} connections), none after the kill, "
        f"shed by the proxy {f['shed']} (503 with Retry-After), no "
        f"read failed before its answer began (cut mid-answer: {f['reads_cut_mid_answer']}); "
        f"acked {f['acked']}, in DB {f['in_db']}, lost {f['lost']}; back in rotation "
        f"{f['back_in_rotation_s']} s after the kill"
    )
