"""Drill 36: a volume fills up; the disk alert pages before it is full.

A small filesystem (drills.loop_disk) is mounted into the node exporter as ``/volumes/drill``
(deploy/drills/compose.volume-fill.yml), beside the database, backup repository and Prometheus
volumes it watches in production. It starts 79 % full (what the volume already held) and then
grows at a steady rate that would fill it about 9 minutes later. Pass: HeroesVolumeFillingUp (the
shipped rule: under 20 % free and full within 4 hours at the last hour's rate, for 5 minutes)
fires and reaches the pager while the volume still has room; it resolves once the space is freed.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from drills.common import Context, DrillResult, wait_for
from drills.loop_disk import LoopDisk
from drills.monitoring_stack import (
    RESOLVE_TARGET_S,
    Prometheus,
    Watch,
    expect_within,
    monitoring,
    took,
)
from drills.stack import DrillError, log

TITLE = "A volume filling up: the disk alert pages before it is full, and resolves"
ALERT = "HeroesVolumeFillingUp"
MOUNTPOINT = "/volumes/drill"
DISK_MB = 100
PREFILL = 0.79
#: About 2 MB a minute: the last 21 % of the disk lasts ~9 minutes, past the rule's 5 minutes.
RATE_BPS = 40 * 1024
#: The volume crosses 20 % free about 25 s in, the rule's `for` adds 5 minutes, scrapes and
#: evaluations up to 90 s more; the disk is full at about 540 s.
FIRE_TARGET_S = 420.0


def _ours(prom: Prometheus, state: str) -> bool:
    return any(a["labels"].get("mountpoint") == MOUNTPOINT for a in prom.alerts(ALERT, state))


def _filling(ctx: Context, disk: LoopDisk, result: DrillResult) -> dict[str, float]:
    stack = ctx.stack
    prom = monitoring(ctx)
    size = disk.free_bytes()
    disk.grow(int(size * PREFILL))
    t0 = time.time()
    log(f"drill 36: {DISK_MB} MB volume {PREFILL:.0%} full, growing {RATE_BPS // 1024} KiB/s")
    watch = Watch(stack, prom, t0)
    seen: dict[str, float] = {}
    written = 0
    while time.time() - t0 < FIRE_TARGET_S + 60:
        due = int(RATE_BPS * (time.time() - t0))
        if due > written and disk.free_bytes() > due - written:
            disk.grow(due - written)
            written = due
        if "pending" not in seen and (_ours(prom, "pending") or _ours(prom, "firing")):
            seen["pending"] = time.time() - t0
        if _ours(prom, "firing"):
            seen["firing"] = time.time() - t0
            break
        if disk.free_bytes() < 1 << 20:
            break  # full: the page, if any, came too late
        time.sleep(1.0)  # the loop's tick: it paces the growth (RATE_BPS) and the polls
    result.figures["free_at_firing_mb"] = round(disk.free_bytes() / 2**20, 1)
    result.figures["full_in_s_at_firing"] = round(disk.free_bytes() / RATE_BPS)
    result.expect("firing" in seen, f"{ALERT} never fired; the disk ran full or time ran out")
    result.expect(disk.free_bytes() >= 1 << 20, "the volume was full before the page")
    hooked = wait_for(lambda: watch.hook(ALERT, "firing", t0) is not None, timeout=60, interval=1)
    if hooked is not None:
        seen["at_pager"] = watch.hook(ALERT, "firing", t0) or 0.0
    disk.free()
    t_free = time.time()
    resolved = Watch(stack, prom, t_free).until({"resolved": lambda: watch.gone(ALERT)})
    expect_within(result, seen, "firing", FIRE_TARGET_S)
    expect_within(result, seen, "at_pager", FIRE_TARGET_S + 30)
    expect_within(result, resolved, "resolved", RESOLVE_TARGET_S)
    seen["resolved_after_free"] = resolved.get("resolved", -1.0)
    return seen


@pytest.mark.drill(36, TITLE, stage="monitoring", services=("node-exporter", "prometheus"))
def test_volume_filling(ctx: Context, result: DrillResult) -> None:
    prom = monitoring(ctx)
    base = ctx.stack
    with LoopDisk(DISK_MB) as disk:
        stack = replace(
            base,
            files=(*base.files, "deploy/drills/compose.volume-fill.yml"),
            extra_env={**base.extra_env, "DRILL_VOLUME": str(disk.mount)},
        )
        try:
            stack.compose("up", "-d", "--wait", "--no-deps", "node-exporter", timeout=120)
            query = f'node_filesystem_size_bytes{{mountpoint="{MOUNTPOINT}"}}'
            if wait_for(lambda: prom.get("/api/v1/query", query=query)["result"], 60) is None:
                raise DrillError(f"prometheus has no {query} after 60 s")
            seen = _filling(replace(ctx, stack=stack), disk, result)
        finally:
            # The node exporter as shipped again, before the filesystem goes.
            base.compose("up", "-d", "--wait", "--no-deps", "node-exporter", timeout=120)
    free_mb, full_in = result.figures["free_at_firing_mb"], result.figures["full_in_s_at_firing"]
    result.summary = (
        f"{DISK_MB} MB volume from {PREFILL:.0%} full at {RATE_BPS // 1024} KiB/s: {ALERT} pending "
        f"after {took(seen, 'pending')}, firing after {took(seen, 'firing')} with "
        f"{free_mb} MB free (full {full_in} s later at that rate), at the pager after "
        f"{took(seen, 'at_pager')}; resolved "
        f"{took(seen, 'resolved_after_free')} after the space was freed"
    )
