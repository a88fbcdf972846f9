"""Drill 27: abusive clients against the edge's rate limits (haproxy.cfg), with the shipped limits.

On a stack of its own (its tokens file holds ten tokens), 8 well-behaved clients read at a steady
10 requests/s each, each with its own token (drills.load --rate, a token per client), from the
host. Alone for a while; then, one after another, for PHASE seconds each:

- a flooder from the host (the same address as the well-behaved ones: the bridge's gateway)
  with one token of its own, on 16 connections each sending as fast as the proxy answers;
- a client in a container on the stack's ``edge`` network (an address of its own) sending no
  token at all, the same way;
- a client in another container sending a new made-up token with every request, the same way;

then alone again. The abusers run at a lower CPU priority (``nice -n 10``): a real one has a
machine of its own, not a share of the 2 cores it attacks. Pass: the well-behaved clients get 0
refusals and 0 errors, and their p99 in each abusive phase stays within 2x of their p99 alone (the
larger of the two quiet phases: both are measured, as the shared machine's noise moves it); every
abuser gets 429s, each with a ``Retry-After`` and a ``RateLimit`` field, JSON like the API's
errors; no 5xx anywhere; the exporter counts the refusals by reason.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from drills.client import MISSES, Outcome
from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    Request,
    own_stack,
    percentile,
    refusals,
)
from drills.stack import NetworkLoad, Stack, log

TITLE = "Abusive clients: rate limits per token, per address, made-up tokens; the rest unaffected"
WELL_BEHAVED = 8
PACE = 10.0  # requests/s per well-behaved client
QUIET = 8.0  # seconds alone, before and after
PHASE = 10.0  # seconds per abuser
#: Each abuser's keep-alive connections, each sending as fast as it is answered: one connection
#: is no flood on a slow host (a closed loop at 50 ms per answer sends 20/s).
ABUSER_CONNECTIONS = 16


def _limits(stack: Stack) -> dict[str, str]:
    env = stack.inspect(stack.container("proxy"))["Config"].get("Env") or []
    pairs = (item.partition("=") for item in env)
    return {k: v for k, _, v in pairs if k.startswith("RATE_LIMIT_")}


def _abuse(stack: Stack, name: str, prefix: str, **kw: Any) -> tuple[LoadRun, float, float]:
    load: NetworkLoad = stack.start_load(
        prefix, clients=ABUSER_CONNECTIONS, ops=("LIST",), max_seconds=60, niced=True, **kw
    )
    try:
        t0 = load.wait_started()
        time.sleep(PHASE)
        t1 = time.time()
    except BaseException:
        load.kill()
        raise
    run = LoadRun(load.stop())
    log(f"drill 27: {name}: {run.counts()}")
    return run, t0, t1


@pytest.mark.drill(27, TITLE, stage="own-stack", services=("proxy",))
def test_abuse(ctx: Context, result: DrillResult) -> None:
    directory = Path(tempfile.mkdtemp(prefix="heroes-abuse-"))  # 0700
    try:
        tokens = directory / "api-tokens"
        tokens.write_text("".join(f"{secrets.token_urlsafe(32)}\n" for _ in range(10)))
        tokens.chmod(0o644)  # uid 10001 reads the bind mount
        flooder = directory / "flooder-token"
        flooder.write_text(tokens.read_text().splitlines()[9] + "\n")
        with own_stack(ctx, "abuse", tokens_file=tokens) as stack:
            _drill(result, ctx, stack, flooder)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _drill(result: DrillResult, ctx: Context, stack: Stack, flooder_token: Path) -> None:
    limits = _limits(stack)
    url = stack.url()
    prefix = f"d27-{ctx.run_id}"
    good = stack.start_load(
        f"{prefix}-good", url, WELL_BEHAVED, ops=("GET", "LIST"), tokens="per-client", rate=PACE,
        max_seconds=QUIET * 2 + PHASE * 3 + 90,
    )  # fmt: skip
    phases: dict[str, tuple[float, float]] = {}
    abusers: dict[str, LoadRun] = {}
    try:
        t0 = good.wait_started() + 2.0  # every client has made its hero
        time.sleep(2.0 + QUIET)
        phases["alone before"] = (t0, time.time())
        for name, kw in (
            ("one token, host", {"tokens": "one", "token_file": flooder_token}),
            # No token first: the next container may get the same address, which the made-up
            # tokens leave refused for new keys for a while.
            ("no token, own address", {"tokens": "none", "in_container": True}),
            ("made-up tokens, own address", {"tokens": "random", "in_container": True}),
        ):
            run, a, b = _abuse(stack, name, f"{prefix}-{len(abusers)}", url=url, **kw)
            abusers[name], phases[name] = run, (a, b)
        t = time.time()
        time.sleep(QUIET)
        phases["alone after"] = (t, time.time())
    except BaseException:
        good.kill()
        raise
    well = LoadRun(good.stop())
    counters = refusals(stack)

    def of(window: tuple[float, float]) -> list[Request]:
        return [r for r in well.requests if r.op != "POST" and window[0] <= r.started < window[1]]

    p99 = {name: percentile((r.latency for r in of(w)), 99) for name, w in phases.items()}
    baseline = max(p99["alone before"], p99["alone after"])
    bad = [r for r in well.requests if r.outcome is not Outcome.OK]
    f = result.figures
    f.update(
        limits=limits, well_behaved=WELL_BEHAVED, pace=PACE, sent=len(well.requests),
        not_2xx=len(bad), statuses=sorted({r.status for r in bad}),
        p99_ms={k: round(v * 1000, 1) for k, v in p99.items()},
        p99_ratio={k: round(v / baseline, 2) for k, v in p99.items() if k in abusers},
        p99_ratio_lower_baseline={
            k: round(v / min(p99["alone before"], p99["alone after"]), 2)
            for k, v in p99.items()
            if k in abusers
        },
        abusers={k: _abuser_figures(r) for k, r in abusers.items()}, refusals=counters,
    )  # fmt: skip
    result.expect(not bad, f"well-behaved clients: {len(bad)} not 2xx ({f['statuses']})")
    for name, a in f["abusers"].items():
        result.expect(a["429"] > 0, f"{name}: never refused ({a})")
        result.expect(
            a["429_without_headers"] == 0 and a["429_not_json"] == 0,
            f"{name}: 429s without Retry-After/RateLimit or JSON detail ({a})",
        )
        result.expect(a["5xx"] == 0 and a["lost"] == 0, f"{name}: 5xx or lost ({a})")
        result.expect(
            p99[name] <= 2 * baseline,
            f"well-behaved p99 with {name}: {p99[name] * 1000:.1f} ms > 2x alone "
            f"({baseline * 1000:.1f} ms)",
        )
    for reason in ("refused_client", "refused_new_keys"):
        result.expect(counters[reason] > 0, f"exporter counted no {reason}: {counters}")
    phase_text = "; ".join(
        f"{name}: {a['sent']} sent, {a['2xx']} 2xx, {a['429']} 429 (Retry-After "
        f"{a['retry_after']}), well-behaved p99 {f['p99_ms'][name]} ms "
        f"({f['p99_ratio'][name]}x)"
        for name, a in f["abusers"].items()
    )
    result.summary = (
        f"limits {limits}; {WELL_BEHAVED} clients x {PACE:g}/s with their own tokens: sent "
        f"{f['sent']}, not 2xx {f['not_2xx']}, p99 alone {f['p99_ms']['alone before']} / "
        f"{f['p99_ms']['alone after']} ms (before/after); {phase_text} (against the lower of the "
        f"two quiet p99s: {f['p99_ratio_lower_baseline']}); exporter refusals "
        f"{json.dumps(counters)}"
    )


def _abuser_figures(run: LoadRun) -> dict[str, Any]:
    refused = [r for r in run.requests if r.status == 429]
    return {
        "sent": len(run.requests),
        "2xx": len(run.of(Outcome.OK)),
        "429": len(refused),
        "429_without_headers": sum(not (r.retry_after and r.ratelimit) for r in refused),
        "429_not_json": sum(not (r.json_ok and '"detail"' in r.snippet) for r in refused),
        "retry_after": sorted({r.retry_after for r in refused if r.retry_after}),
        "5xx": len(run.of(Outcome.SERVER_ERROR)),
        "lost": sum(r.outcome in MISSES for r in run.requests),
    }
