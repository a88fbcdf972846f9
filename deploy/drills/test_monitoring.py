"""Drills 23-25: the `monitoring` profile sees trouble and says so (docs/observability.md).

The profile (Prometheus, Alertmanager, its webhook receiver ``alert-log``, the PostgreSQL
exporter) is started next to the drills' stack with the shipped rules and Alertmanager
configuration; only Prometheus's scrape and evaluation intervals are shortened (a copy of
deploy/prometheus/prometheus.yml with another ``global`` block, given as PROMETHEUS_CONFIG), so
the ``for:`` durations that decide how soon an alert fires are the shipped ones.

- 23: ``docker compose stop db`` under load: HeroesDatabaseUnavailable firing in Prometheus and
  received by the webhook within 90 s, the 503s burn the error budget (HeroesErrorBudgetFastBurn
  fires); both resolve, and the webhook gets the "resolved", within 90 s of the database's return.
- 24: SIGKILL of one replica's gunicorn master (the container's State.Pid, from the host: a crash,
  so Docker's restart policy applies): HeroesReplicaRestarted for that replica's address.
- 25: every replica stopped: HeroesNoReadyReplica firing and received; resolved once they are
  back; then ``--scale api=4``: four api targets up in Prometheus within one scrape interval +
  15 s of the new replicas being healthy, with no edit; back to the starting count afterwards.

(Drill 26, traces through the proxy, is drills.test_tracing.)

Each records how long each alert took to fire (from the harm) and to reach the webhook.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from drills.common import Context, DrillResult, wait_for, warm_up
from drills.monitoring_stack import (
    FIRE_TARGET_S,
    RESOLVE_TARGET_S,
    SCRAPE_S,
    WAIT_S,
    Prometheus,
    Watch,
    expect_within,
    monitoring,
    took,
)
from drills.stack import DrillError, log

TITLE_DB = "Database stopped under load: database-unavailable and fast-burn alerts fire and resolve"
TITLE_REPLICA = "Replica process killed (SIGKILL of State.Pid): replica alert fires"
TITLE_REPLICAS = (
    "All replicas stopped: no-ready-replica alert fires and resolves; scaled to 4: 4 api targets"
)

# --- 23 --------------------------------------------------------------------------------------

#: Some series of the replica's /health/ready counter (HeroesReplicaRestarted's) has 3 samples or
#: more in the last minute: scraped a few times.
SCRAPED_3 = (
    'max(count_over_time(heroes_http_requests_total{{job="api",route="/health/ready",'
    'instance="{instance}"}}[1m])) >= 3'
)


@pytest.mark.drill(
    23, TITLE_DB, stage="monitoring", services=("prometheus", "alertmanager", "alert-log", "db")
)
def test_monitoring_database_down(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prom = monitoring(ctx)
    clients = min(ctx.clients, 8)
    load = stack.start_load(f"d23-{ctx.run_id}", ctx.api_url, clients, max_seconds=400)
    try:
        load.wait_started()
        # Some successes in the SLO windows first: answers, then scraped and the rules evaluated.
        warm_up(ctx, load, clients=clients)
        recorded = prom.wait_recorded(time.time(), job="api")
        result.expect(recorded is not None, "the load's answers not in Prometheus within 60 s")
        t_stop = time.time()
        log("drill 23: docker compose stop db (until the alerts fire)")
        stack.compose("stop", "db", timeout=60)
        watch = Watch(stack, prom, t_stop)
        db, burn = "HeroesDatabaseUnavailable", "HeroesErrorBudgetFastBurn"
        fired = watch.until({
            "db_alert_firing": lambda: watch.fired(db),
            "db_alert_webhook": lambda: watch.hook(db, "firing", t_stop) is not None,
            "fast_burn_firing": lambda: watch.fired(burn),
        })  # fmt: skip
        logged = watch.hook(db, "firing", t_stop)  # when the receiver logged it
        if logged is not None:
            fired["db_alert_webhook"] = logged
        data = load.stop()
    except BaseException:
        load.kill()
        raise
    finally:
        t_start = time.time()
        stack.compose("start", "db", timeout=60)
    back = Watch(stack, prom, t_start)
    # The fast burn resolves once its 5 m window has forgotten the burst (the unit tests show
    # it): minutes, by design, so it is not waited for here.
    resolved = back.until({
        "db_alert_resolved": lambda: back.gone(db),
        "db_alert_webhook_resolved": lambda: back.hook(db, "resolved", t_start) is not None,
    }, timeout=WAIT_S)  # fmt: skip
    logged = back.hook(db, "resolved", t_start)
    if logged is not None:
        resolved["db_alert_webhook_resolved"] = logged
    stack.wait_ready(ctx.api_url, timeout=60)
    expect_within(result, fired, "db_alert_firing", FIRE_TARGET_S)
    expect_within(result, fired, "db_alert_webhook", FIRE_TARGET_S)
    expect_within(result, fired, "fast_burn_firing", WAIT_S)
    expect_within(result, resolved, "db_alert_resolved", RESOLVE_TARGET_S)
    expect_within(result, resolved, "db_alert_webhook_resolved", RESOLVE_TARGET_S)
    statuses: dict[str, int] = {}
    for row in data["requests"]:
        statuses[str(row[2])] = statuses.get(str(row[2]), 0) + 1
    result.figures.update(clients=clients, statuses=statuses, scrape_s=SCRAPE_S)
    result.summary = (
        f"scrape/eval every {SCRAPE_S} s, {clients} clients (statuses {statuses}): after "
        f"`stop db` HeroesDatabaseUnavailable firing in {took(fired, 'db_alert_firing')} "
        f"(webhook {took(fired, 'db_alert_webhook')}), HeroesErrorBudgetFastBurn firing in "
        f"{took(fired, 'fast_burn_firing')}; after `start db` resolved in "
        f"{took(resolved, 'db_alert_resolved')} (webhook "
        f"{took(resolved, 'db_alert_webhook_resolved')})"
    )


# --- 24 --------------------------------------------------------------------------------------


def _kill(pid: int) -> None:
    """SIGKILL to the container's init (gunicorn's master), from the host: what a crash looks
    like to Docker (`docker kill` would count as a manual stop, with no restart). CI runners that
    are not root do it through sudo."""
    try:
        os.kill(pid, signal.SIGKILL)
    except PermissionError:
        subprocess.run(["sudo", "-n", "kill", "-KILL", str(pid)], check=True, timeout=10)


@pytest.mark.drill(24, TITLE_REPLICA, stage="monitoring", services=("api", "prometheus"))
def test_monitoring_replica_down(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prom = monitoring(ctx)
    victim = stack.container("api")
    address = next(iter(stack.addresses(victim)))
    instances = {t["labels"]["instance"] for t in prom.targets("api")}
    instance = next((i for i in instances if i.split(":")[0] in stack.addresses(victim)), None)
    if instance is None:
        raise DrillError(f"no api target for {victim[:12]} ({address}) in {instances}")
    pid = int(stack.inspect(victim)["State"]["Pid"])
    restarts = int(stack.inspect(victim)["RestartCount"])
    # Prometheus must have scraped the replica's counter a few times before the crash.
    scraped = wait_for(
        lambda: bool(
            prom.get("/api/v1/query", query=SCRAPED_3.format(instance=instance))["result"]
        ),
        timeout=60,
        interval=1.0,
    )
    result.expect(scraped is not None, f"{instance}'s counter not scraped 3 times in a minute")
    t_kill = time.time()
    _kill(pid)
    log(f"drill 24: SIGKILL to pid {pid} (replica {victim[:12]}, target {instance})")
    watch = Watch(stack, prom, t_kill)
    name = "HeroesReplicaRestarted"
    seen = watch.until({
        "restarted": lambda: int(stack.inspect(victim)["RestartCount"]) > restarts,
        "replica_alert_firing": lambda: watch.fired(name, {"instance": instance}),
        "replica_alert_webhook": lambda: watch.hook(name, "firing", t_kill) is not None,
    })  # fmt: skip
    if "replica_alert_webhook" in seen:
        seen["replica_alert_webhook"] = watch.hook(name, "firing", t_kill) or 0.0
    stack.wait_ready(ctx.api_url, timeout=60)
    wait_for(lambda: prom.up("api") == len(stack.containers("api")), timeout=60)
    after = stack.addresses(victim)
    result.figures.update(
        instance=instance,
        same_address_after_restart=address in after,
        docker_restarted_s=None if "restarted" not in seen else round(seen["restarted"], 1),
    )
    result.expect("restarted" in seen, "Docker did not restart the killed replica")
    expect_within(result, seen, "replica_alert_firing", FIRE_TARGET_S)
    expect_within(result, seen, "replica_alert_webhook", FIRE_TARGET_S)
    result.summary = (
        f"SIGKILL of replica {instance}'s pid 1 (restarted by Docker after "
        f"{took(seen, 'restarted')}, same address {address in after}): {name} firing in "
        f"{took(seen, 'replica_alert_firing')} (webhook {took(seen, 'replica_alert_webhook')})"
    )


# --- 25 --------------------------------------------------------------------------------------


@pytest.mark.drill(25, TITLE_REPLICAS, stage="monitoring", services=("api", "proxy", "prometheus"))
def test_monitoring_replicas_down(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prom = monitoring(ctx)
    replicas = len(stack.containers("api"))
    t_stop = time.time()
    log(f"drill 25: docker compose stop api ({replicas} replicas)")
    stack.compose("stop", "api", timeout=120)
    watch = Watch(stack, prom, t_stop)
    name = "HeroesNoReadyReplica"
    seen = watch.until({
        "no_ready_alert_firing": lambda: watch.fired(name),
        "no_ready_alert_webhook": lambda: watch.hook(name, "firing", t_stop) is not None,
    })  # fmt: skip
    if "no_ready_alert_webhook" in seen:
        seen["no_ready_alert_webhook"] = watch.hook(name, "firing", t_stop) or 0.0
    t_start = time.time()
    stack.compose("start", "api", timeout=180)
    stack.wait_ready(ctx.api_url, timeout=90)
    back = Watch(stack, prom, t_start)
    resolved = back.until({
        "no_ready_alert_resolved": lambda: back.gone(name),
        "targets_back": lambda: prom.up("api") == replicas,
    })  # fmt: skip
    expect_within(result, seen, "no_ready_alert_firing", FIRE_TARGET_S)
    expect_within(result, seen, "no_ready_alert_webhook", FIRE_TARGET_S)
    expect_within(result, resolved, "no_ready_alert_resolved", RESOLVE_TARGET_S)
    summary = (
        f"`stop api` ({replicas} replicas): {name} firing in {took(seen, 'no_ready_alert_firing')}"
        f" (webhook {took(seen, 'no_ready_alert_webhook')}); after `start api` resolved in "
        f"{took(resolved, 'no_ready_alert_resolved')}, {replicas} targets up again in "
        f"{took(resolved, 'targets_back')}"
    )
    result.summary = f"{summary}; {_scale(ctx, prom, result)}"


def _scale(ctx: Context, prom: Prometheus, result: DrillResult) -> str:
    """``--scale api=4``: 4 api targets up within a scrape interval + 15 s of the replicas being
    healthy; then back to the starting count."""
    stack = ctx.stack
    start = len(stack.containers("api"))
    target = 4
    log(f"drill 25: docker compose up -d --scale api={target}")
    t0 = time.time()
    stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", f"api={target}", "api",
                  timeout=240)  # fmt: skip

    def all_healthy() -> bool:
        ids = stack.containers("api")
        return len(ids) == target and all(
            (stack.inspect(c)["State"].get("Health") or {}).get("Status") == "healthy" for c in ids
        )

    watch = Watch(stack, prom, t0)
    seen = watch.until(
        {"healthy": all_healthy, "targets_up": lambda: prom.up("api") == target}, timeout=180
    )
    # Prometheus may scrape a new replica before Docker's healthcheck (every 3 s) calls it
    # healthy: a negative lag is fine.
    lag = seen["targets_up"] - seen["healthy"] if len(seen) == 2 else None
    stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", f"api={start}", "api",
                  timeout=240)  # fmt: skip
    t_down = time.time()
    gone = Watch(stack, prom, t_down).until(
        {"targets_back": lambda: len(prom.targets("api")) == start}, timeout=60
    )
    result.figures.update(
        healthy_s=round(seen["healthy"], 1) if "healthy" in seen else None,
        targets_up_s=round(seen["targets_up"], 1) if "targets_up" in seen else None,
        targets_after_healthy_s=None if lag is None else round(lag, 1),
        targets_back_to_start_s=round(gone["targets_back"], 1) if "targets_back" in gone else None,
    )
    result.expect(
        lag is not None and lag <= SCRAPE_S + 15.0,
        f"{target} api targets up {lag} s after the replicas were healthy (target "
        f"{SCRAPE_S + 15:.0f} s): {seen}",
    )
    result.expect("targets_back" in gone, f"api targets did not go back to {start}")
    lag_text = "never" if lag is None else f"{lag:+.1f} s"
    return (
        f"--scale api={target}: all {target} replicas healthy {took(seen, 'healthy')} after "
        f"the command, {target} api targets up in Prometheus {took(seen, 'targets_up')} after "
        f"it ({lag_text} from healthy; target {SCRAPE_S} s scrape interval + 15 s, DNS refresh "
        f"5 s); back to {start} targets {took(gone, 'targets_back')} after scaling down"
    )
