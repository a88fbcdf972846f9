"""A fault under 8 reading and 8 keyed writing clients, through the proxy, and what they saw.

Shared by the drills of quiet faults (16: database partition, 18: full disk): the readers GET one
hero in a loop (drills.load); the writers POST heroes with an Idempotency-Key each and send every
failed attempt again with it (drills.keyed_load) until it is answered, well past the fault.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drills.client import Outcome
from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    describe,
    start_keyed_load,
    stored_counts,
    warm_up,
)

CLIENTS = 8  # readers, and as many keyed writers
#: Statuses a client may see during a database fault: 503 (with Retry-After) while it lasts,
#: 409 for a keyed retry that reached the worker still holding its first attempt.
ALLOWED = {200, 409, 503}


@dataclass(frozen=True)
class Fault:
    started: float  # wall clock
    ended: float  # wall clock: healed, space freed...


def under_fault(
    ctx: Context, prefix: str, fault: Callable[[], Fault], retry_for: float, settle: float = 5.0
) -> dict[str, Any]:
    """Run ``fault`` under the load; the figures of what the clients saw."""
    stack = ctx.stack
    readers = stack.start_load(f"{prefix}-r", clients=CLIENTS, ops=("GET",))
    writers = start_keyed_load(ctx, f"{prefix}-w", clients=CLIENTS, retry_for=retry_for)
    try:
        readers.wait_started()
        writers.wait_started()
        warm_up(ctx, readers, writers, clients=CLIENTS)
        when = fault()
        time.sleep(settle)  # the clients after the fault for a stated time (drill 18b: longer)
        reads = LoadRun(readers.stop())
        keyed = writers.stop()
    except BaseException:
        readers.kill()
        writers.kill()
        raise
    attempts = keyed["attempts"]
    final = {attempt[0]: attempt for attempt in attempts}  # the last attempt of each key
    acked = {key for key, last in final.items() if last[1] == "2xx"}
    stored = stored_counts(stack, f"{prefix}-w")
    during_reads = [r for r in reads.requests if r.started >= when.started]
    during_writes = [a for a in attempts if a[4] is not None and a[4] >= when.started]
    reads_back = [
        r.ended - when.ended for r in reads.of(Outcome.OK) if r.ended >= when.ended
    ]  # fmt: skip
    writes_back = [a[4] + a[5] - when.ended for a in during_writes if a[1] == "2xx"]
    writes_back = [t for t in writes_back if t >= 0]
    return {
        "fault_s": round(when.ended - when.started, 1),
        "reads": len(reads.requests),
        "read_statuses": dict(Counter(r.status for r in during_reads)),
        "read_misses": describe(reads.misses),
        "write_attempts": len(attempts),
        "write_statuses": dict(Counter(a[2] for a in during_writes)),
        "keys": len(final),
        "acked": len(acked),
        "unanswered": len(final) - len(acked),
        "lost": len(acked - set(stored)),
        "twice": sum(1 for n in stored.values() if n > 1),
        "slowest_s": round(
            max([r.latency for r in reads.requests] + [a[5] for a in attempts] + [0.0]), 2
        ),
        "reads_back_s": round(min(reads_back), 2) if reads_back else None,
        "writes_back_s": round(min(writes_back), 2) if writes_back else None,
    }


def expect_bounded(result: DrillResult, f: dict[str, Any], what: str, slowest_max: float) -> None:
    """What every quiet fault must keep: no answer slower than ``slowest_max``, only the statuses
    of ALLOWED, every key answered in the end, every acknowledged write stored once."""
    result.expect(f["slowest_s"] <= slowest_max, f"{what}: slowest answer {f['slowest_s']} s")
    result.expect(f["read_misses"] == "", f"{what}: reads not answered: {f['read_misses']}")
    odd = (set(f["read_statuses"]) | set(f["write_statuses"])) - ALLOWED
    result.expect(
        not odd,
        f"{what}: statuses {odd} (reads {f['read_statuses']}, writes {f['write_statuses']})",
    )
    result.expect(f["unanswered"] == 0, f"{what}: {f['unanswered']} keys never answered")
    result.expect(f["lost"] == 0, f"{what}: {f['lost']} acknowledged writes missing")
    result.expect(f["twice"] == 0, f"{what}: {f['twice']} writes stored twice")
