"""The `monitoring` profile as the monitoring drills (23-25, 32-37) run it: Prometheus with the
shipped rules and short intervals, and a watch on when alerts fire and reach the receiver."""

from __future__ import annotations

import json
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from drills.common import Context, DrillResult, wait_for
from drills.stack import DrillError, Stack, log

#: Prometheus's intervals during the drills (the shipped file says 15 s).
SCRAPE_S = 5
#: An alert fires, and reaches its receiver, within 90 s of the harm.
FIRE_TARGET_S = 90.0
#: ... and resolves within 90 s of the harm's end.
RESOLVE_TARGET_S = 90.0
#: Waiting for an alert that should come: the target plus room to report the miss.
WAIT_S = 150.0
SERVICES = (
    "prometheus", "alertmanager", "alert-log", "postgres-exporter", "blackbox-exporter",
    "node-exporter",
)  # fmt: skip


def _drill_config(root: Path) -> Path:
    """The shipped prometheus.yml with short intervals, in a fresh directory (file 0644: the
    container's user reads the bind mount)."""
    config = yaml.safe_load((root / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {
        "scrape_interval": f"{SCRAPE_S}s",
        "scrape_timeout": "4s",
        "evaluation_interval": f"{SCRAPE_S}s",
    }
    path = Path(tempfile.mkdtemp(prefix="heroes-drills-prom-")) / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o644)
    return path


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise DrillError(f"prometheus {path}: {body}")
        return body["data"]

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, Any]]:
        return [
            a
            for a in self.get("/api/v1/alerts")["alerts"]
            if a["labels"].get("alertname") == name and a["state"] == state
        ]

    def targets(self, job: str) -> list[dict[str, Any]]:
        return [
            t for t in self.get("/api/v1/targets")["activeTargets"] if t["labels"]["job"] == job
        ]

    def up(self, job: str) -> int:
        return sum(t["health"] == "up" for t in self.targets(job))

    def scraped_since(self, t: float, scrapes: int = 1, job: str | None = None) -> bool:
        """Every active target (of ``job``) scraped ``scrapes`` times since wall-clock ``t`` (its
        last scrape at least scrapes - 1 intervals after it)."""
        targets = [
            x for x in self.get("/api/v1/targets")["activeTargets"]
            if job is None or x["labels"]["job"] == job
        ]  # fmt: skip
        after = t + (scrapes - 1) * SCRAPE_S
        return bool(targets) and all(_epoch(x["lastScrape"]) >= after for x in targets)

    def evaluated_since(self, t: float) -> bool:
        """Every rule group on the drills' interval evaluated since wall-clock ``t`` (not those
        on a longer one: the 5-minute budget group)."""
        groups = [
            g for g in self.get("/api/v1/rules")["groups"] if float(g["interval"]) <= SCRAPE_S
        ]  # fmt: skip
        return bool(groups) and all(_epoch(g["lastEvaluation"]) >= t for g in groups)

    def wait_recorded(
        self, t: float, scrapes: int = 1, job: str | None = None, timeout: float = 60.0
    ) -> float | None:
        """Seconds until what happened before ``t`` is in Prometheus: ``scrapes`` scrapes of every
        target (of ``job``) since ``t``, then every rule group evaluated after them. None after
        ``timeout``."""
        t0 = time.monotonic()

        def scraped() -> bool:
            try:
                return self.scraped_since(t, scrapes, job)
            except OSError:
                return False

        if wait_for(scraped, timeout, interval=0.5) is None:
            return None
        t_scraped = time.time()

        def evaluated() -> bool:
            try:
                return self.evaluated_since(t_scraped)
            except OSError:
                return False

        left = timeout - (time.monotonic() - t0)
        if wait_for(evaluated, max(left, 1.0), interval=0.5) is None:
            return None
        return time.monotonic() - t0


def _epoch(rfc3339: str) -> float:
    """Prometheus's RFC 3339 time (nanoseconds, Z) as a Unix time; its zero time far negative."""
    return datetime.fromisoformat(rfc3339).timestamp()


def monitoring(ctx: Context) -> Prometheus:
    """Start the profile once (idempotent) and wait until it sees the stack."""
    stack = ctx.stack
    if "PROMETHEUS_CONFIG" not in stack.extra_env:
        # From now on every compose command of the run includes the profile (so the final
        # `down -v` removes it too).
        stack.extra_env.update(
            COMPOSE_PROFILES="monitoring",
            PROMETHEUS_CONFIG=str(_drill_config(stack.root)),
            PROMETHEUS_PORT="0",
            ALERTMANAGER_PORT="0",
        )
    if not all(stack.containers(s) for s in SERVICES):
        log("monitoring: docker compose --profile monitoring up -d --wait")
        stack.compose("up", "-d", "--wait", "--wait-timeout", "180", *SERVICES, timeout=400)
    prom = Prometheus(stack.url("prometheus", 9090))
    replicas = len(stack.containers("api"))

    def sees_everything() -> bool:
        try:
            return (
                prom.up("api") == replicas
                and prom.up("haproxy") == 1
                and prom.up("postgres") == 1
                and prom.up("blackbox") == 2
                and bool(prom.get("/api/v1/query", query="pg_up == 1")["result"])
            )
        except OSError:
            return False

    if wait_for(sees_everything, timeout=60, interval=1.0) is None:
        raise DrillError(f"prometheus does not see the stack: {prom.get('/api/v1/targets')}")
    return prom


def notifications(stack: Stack, since: float) -> list[dict[str, Any]]:
    """The alerts the webhook receiver (alert-log) logged since a wall-clock time."""
    return [e for e in stack.log_events("alert-log", since) if "alertname" in e]


class Watch:
    """Polls Prometheus and the webhook receiver for the moments alerts fire and resolve."""

    def __init__(self, stack: Stack, prom: Prometheus, t0: float) -> None:
        self.stack, self.prom, self.t0 = stack, prom, t0

    def fired(self, name: str, match: dict[str, str] | None = None) -> bool:
        return any(
            all(a["labels"].get(k) == v for k, v in (match or {}).items())
            for a in self.prom.alerts(name)
        )

    def gone(self, name: str) -> bool:
        return not self.prom.alerts(name) and not self.prom.alerts(name, "pending")

    def hook(self, name: str, status: str, since: float) -> float | None:
        """Seconds from t0 until the receiver logged this alert with this status."""
        for event in notifications(self.stack, since):
            if event["alertname"] == name and event["status"] == status:
                return float(event["t"]) - self.t0
        return None

    def until(self, predicates: dict[str, Any], timeout: float = WAIT_S) -> dict[str, float]:
        """Seconds from t0 until each predicate first held (absent: never within timeout)."""
        seen: dict[str, float] = {}
        deadline = time.time() + timeout
        while time.time() < deadline and len(seen) < len(predicates):
            for key, predicate in predicates.items():
                if key not in seen:
                    try:
                        if predicate():
                            seen[key] = time.time() - self.t0
                    except OSError:
                        pass
            time.sleep(0.5)
        return seen


def expect_within(result: DrillResult, seen: dict[str, float], key: str, target: float) -> None:
    value = seen.get(key)
    result.figures[f"{key}_s"] = None if value is None else round(value, 1)
    result.expect(value is not None and value <= target, f"{key}: {value} s (target {target} s)")


def took(seen: dict[str, float], key: str) -> str:
    return f"{seen[key]:.1f} s" if key in seen else "never"
