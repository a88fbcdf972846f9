"""Drills 32-35: faults only the watchers of the monitoring see (docs/observability.md).

- 32: the proxy killed under load (``docker compose kill``: a manual stop, Docker does not restart
  it): its own exporter dies with it, so only the outside-in probe sees it. HeroesServiceUnreachable
  firing and received by the pager within 2 minutes; resolved once the proxy is back.
- 33: Prometheus stopped: the heartbeat (HeroesWatchdog, repeated every minute by Alertmanager)
  stops, and the heartbeat stand-in (alert-log) reports it missing within its interval plus one
  (HEARTBEAT_TIMEOUT, 120 s, after the last ping); Alertmanager keeps the last Watchdog for 4
  minutes (Prometheus's 4 x resend delay), so the whole takes up to about 7 minutes from the stop.
- 34: the pager unreachable (its secret points at a port nothing listens on; Alertmanager
  recreated with it): a page (the proxy killed again) fails to deliver, and
  HeroesNotificationsFailing reaches the ticket receiver; the pager's secret restored after.
- 35: a replica's container removed (not stopped): it leaves Docker's DNS, HAProxy puts its slot
  in MAINT (not DOWN) and Prometheus drops its target; HeroesReplicaGone fires for the slot.

Same profile and short scrape interval (5 s) as drills 23-25 (drills.monitoring_stack).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from drills.common import Context, DrillResult, warm_up
from drills.monitoring_stack import (
    FIRE_TARGET_S,
    RESOLVE_TARGET_S,
    Watch,
    expect_within,
    monitoring,
    took,
)
from drills.stack import log

TITLE_PROXY = "Proxy killed under load: the outside-in probe pages within 2 minutes and resolves"
TITLE_HEARTBEAT = "Prometheus stopped: the heartbeat stand-in sees the heartbeat stop"
TITLE_RECEIVER = "Pager unreachable: the notification-failure alert reaches the ticket route"
TITLE_GONE = "A replica's container removed (slot MAINT, target gone): replica-gone alert fires"

#: A page within 2 minutes when the service cannot be reached at all.
UNREACHABLE_TARGET_S = 120.0
#: alert-log's HEARTBEAT_TIMEOUT (docker-compose.yml): Alertmanager's 1-minute repeat plus one.
HEARTBEAT_TIMEOUT_S = 120.0
#: Alertmanager holds the last Watchdog until its endsAt: 4 x Prometheus's resend delay (1 m).
WATCHDOG_EXPIRY_S = 240.0


def _heartbeat(ctx: Context, since: float, state: str) -> dict[str, Any] | None:
    events = ctx.stack.log_events("alert-log", since)
    return next((e for e in events if e.get("heartbeat") == state), None)


# --- 32 --------------------------------------------------------------------------------------


@pytest.mark.drill(32, TITLE_PROXY, stage="monitoring", services=("proxy", "blackbox-exporter"))
def test_proxy_killed_pages_from_outside(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prom = monitoring(ctx)
    name = "HeroesServiceUnreachable"
    load = stack.start_load(f"d32-{ctx.run_id}", ctx.api_url, 4, max_seconds=400)
    try:
        load.wait_started()
        # Traffic first, and the outside-in probes' success recorded after it.
        warm_up(ctx, load, clients=4)
        recorded = prom.wait_recorded(time.time(), job="blackbox")
        result.expect(recorded is not None, "the probes not recorded within 60 s")
        t_kill = time.time()
        log("drill 32: docker compose kill proxy (a manual stop: no restart)")
        stack.compose("kill", "proxy", timeout=60)
        watch = Watch(stack, prom, t_kill)
        fired = watch.until(
            {
                "unreachable_firing": lambda: watch.fired(name),
                "unreachable_paged": lambda: watch.hook(name, "firing", t_kill) is not None,
            },
            timeout=UNREACHABLE_TARGET_S + 60,
        )
        logged = watch.hook(name, "firing", t_kill)
        if logged is not None:
            fired["unreachable_paged"] = logged
        pages = [e for e in stack.log_events("alert-log", t_kill) if e.get("alertname") == name]
        load.stop()
    except BaseException:
        load.kill()
        raise
    finally:
        t_start = time.time()
        stack.compose("start", "proxy", timeout=120)
    # HEROES_PORT=0: the proxy publishes on a new free port after a start.
    stack.wait_ready(ctx.refresh_url(), timeout=90)
    back = Watch(stack, prom, t_start)
    resolved = back.until(
        {
            "unreachable_resolved": lambda: back.gone(name),
            "unreachable_resolved_hook": lambda: back.hook(name, "resolved", t_start) is not None,
        },
        timeout=RESOLVE_TARGET_S + 60,
    )
    expect_within(result, fired, "unreachable_firing", UNREACHABLE_TARGET_S)
    expect_within(result, fired, "unreachable_paged", UNREACHABLE_TARGET_S)
    expect_within(result, resolved, "unreachable_resolved", RESOLVE_TARGET_S)
    expect_within(result, resolved, "unreachable_resolved_hook", RESOLVE_TARGET_S)
    paths = sorted({str(e.get("path")) for e in pages})
    result.expect(paths == ["/page"], f"{name} reached {paths}, not the pager alone")
    result.summary = (
        f"`kill proxy` under load: {name} firing in {took(fired, 'unreachable_firing')}, at the "
        f"pager ({paths}) in {took(fired, 'unreachable_paged')} (target "
        f"{UNREACHABLE_TARGET_S:.0f} s); after `start proxy` resolved in "
        f"{took(resolved, 'unreachable_resolved')} (receiver "
        f"{took(resolved, 'unreachable_resolved_hook')})"
    )


# --- 33 --------------------------------------------------------------------------------------


@pytest.mark.drill(33, TITLE_HEARTBEAT, stage="monitoring", services=("prometheus", "alert-log"))
def test_prometheus_stopped_heartbeat_missing(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    monitoring(ctx)
    started = _heartbeat(ctx, time.time() - 3600, "started")
    result.expect(started is not None, "alert-log never received a heartbeat")
    t_stop = time.time()
    log("drill 33: docker compose stop prometheus")
    stack.compose("stop", "prometheus", timeout=60)
    missing: dict[str, Any] | None = None
    try:
        deadline = t_stop + WATCHDOG_EXPIRY_S + 60 + HEARTBEAT_TIMEOUT_S + 60
        while time.time() < deadline and missing is None:
            time.sleep(2.0)
            missing = _heartbeat(ctx, t_stop, "missing")
    finally:
        t_start = time.time()
        stack.compose("up", "-d", "--wait", "--wait-timeout", "120", "prometheus", timeout=200)
    back: dict[str, Any] | None = None
    deadline = time.time() + 180
    while time.time() < deadline and back is None and missing is not None:
        time.sleep(2.0)
        back = _heartbeat(ctx, t_start, "back")
    after_stop = None if missing is None else float(missing["t"]) - t_stop
    after_ping = None if missing is None else float(missing["seconds"])
    back_s = None if back is None else float(back["t"]) - t_start
    result.figures.update(
        missing_after_stop_s=None if after_stop is None else round(after_stop, 1),
        missing_after_last_ping_s=after_ping,
        back_after_start_s=None if back_s is None else round(back_s, 1),
    )
    result.expect(
        after_ping is not None and after_ping <= HEARTBEAT_TIMEOUT_S + 5,
        f"heartbeat missing {after_ping} s after the last ping (target {HEARTBEAT_TIMEOUT_S} s)",
    )
    result.expect(
        after_stop is not None and after_stop <= WATCHDOG_EXPIRY_S + 60 + HEARTBEAT_TIMEOUT_S + 30,
        f"heartbeat missing {after_stop} s after Prometheus stopped",
    )
    result.expect(back_s is not None, "the heartbeat did not come back after Prometheus started")
    result.summary = (
        f"`stop prometheus`: the heartbeat stand-in reported it missing "
        f"{after_stop and round(after_stop)} s after the stop, {after_ping} s after the last "
        f"ping (target {HEARTBEAT_TIMEOUT_S:.0f} s); "
        f"back {back_s and round(back_s)} s after `up prometheus`"
    )


# --- 34 --------------------------------------------------------------------------------------


@pytest.mark.drill(
    34, TITLE_RECEIVER, stage="monitoring", services=("alertmanager", "alert-log", "proxy")
)
def test_pager_unreachable_reaches_the_ticket_route(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prom = monitoring(ctx)
    dead = Path(tempfile.mkdtemp(prefix="heroes-drills-pager-")) / "pager-url"
    dead.write_text("http://alert-log:9/page\n")  # alert-log listens on 9095 only
    dead.parent.chmod(0o755)
    dead.chmod(0o644)
    stack.extra_env["ALERTMANAGER_PAGER_FILE"] = str(dead)
    name = "HeroesNotificationsFailing"
    try:
        log("drill 34: alertmanager recreated with an unreachable pager; docker compose kill proxy")
        stack.compose("up", "-d", "--wait", "--force-recreate", "alertmanager", timeout=200)
        t0 = time.time()
        stack.compose("kill", "proxy", timeout=60)
        watch = Watch(stack, prom, t0)
        seen = watch.until(
            {
                "failing_firing": lambda: watch.fired(name),
                "failing_ticket": lambda: any(
                    e.get("alertname") == name and e.get("path") == "/ticket"
                    for e in stack.log_events("alert-log", t0)
                ),
            },
            timeout=420,
        )
        pages = [e for e in stack.log_events("alert-log", t0) if e.get("path") == "/page"]
    finally:
        stack.compose("start", "proxy", timeout=120)
        del stack.extra_env["ALERTMANAGER_PAGER_FILE"]
        stack.compose("up", "-d", "--wait", "--force-recreate", "alertmanager", timeout=200)
    stack.wait_ready(ctx.refresh_url(), timeout=90)
    # rate over 5 m of the failures, then `for: 2m`, then a group: minutes by design.
    expect_within(result, seen, "failing_firing", 300.0)
    expect_within(result, seen, "failing_ticket", 330.0)
    result.expect(not pages, f"the unreachable pager received {len(pages)} notifications")
    result.summary = (
        f"pager unreachable, proxy killed: {name} firing {took(seen, 'failing_firing')} after "
        f"the kill, at the ticket receiver {took(seen, 'failing_ticket')} after it; "
        f"{len(pages)} reached the dead pager"
    )


# --- 35 --------------------------------------------------------------------------------------


@pytest.mark.drill(35, TITLE_GONE, stage="monitoring", services=("api", "proxy", "prometheus"))
def test_replica_container_removed(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prom = monitoring(ctx)
    replicas = len(stack.containers("api"))
    victim = stack.container("api")
    name = "HeroesReplicaGone"
    t_rm = time.time()
    log(f"drill 35: docker rm -f {victim[:12]} (an api replica's container removed)")
    stack.docker("rm", "-f", victim)
    watch = Watch(stack, prom, t_rm)
    seen = watch.until(
        {
            "gone_firing": lambda: watch.fired(name),
            "gone_ticket": lambda: watch.hook(name, "firing", t_rm) is not None,
        },
        timeout=FIRE_TARGET_S + 60,
    )
    if "gone_ticket" in seen:
        seen["gone_ticket"] = watch.hook(name, "firing", t_rm) or 0.0
    quiet = {n: bool(prom.alerts(n)) for n in ("HeroesReplicaDown", "HeroesReplicaNotReady")}
    stack.compose(
        "up", "-d", "--no-deps", "--no-recreate", "--scale", f"api={replicas}", "api", timeout=240
    )
    stack.wait_ready(ctx.api_url, timeout=90)
    expect_within(result, seen, "gone_firing", FIRE_TARGET_S)
    expect_within(result, seen, "gone_ticket", FIRE_TARGET_S)
    result.figures.update(other_replica_alerts=quiet)
    result.summary = (
        f"`docker rm -f` of a replica: {name} firing in {took(seen, 'gone_firing')} (ticket "
        f"{took(seen, 'gone_ticket')}; target {FIRE_TARGET_S:.0f} s); the per-replica alerts "
        f"meanwhile: {quiet}"
    )
