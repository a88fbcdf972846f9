"""Drill 37: every panel of the Grafana dashboards (deploy/grafana/dashboards/) has data.

Grafana itself is not run (no image in the lab, its `grafana` profile is not run in CI): each
panel's PromQL is what Grafana would send, so it runs against the monitoring profile's Prometheus
(instant query) during a mixed load (reads, writes through the proxy), and each must return at
least one series. A panel whose metric was renamed, or whose labels match nothing, fails here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from drills.common import Context, DrillResult
from drills.monitoring_stack import monitoring
from drills.stack import log

TITLE = "Every dashboard panel's query returns data under a mixed load"
DASHBOARDS = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"


def panels() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) for every target of every panel."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((path.stem, panel["title"], target["expr"]))
    return out


@pytest.mark.drill(37, TITLE, stage="monitoring", services=("prometheus",))
def test_every_panel_has_data(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prom = monitoring(ctx)
    load = stack.start_load(f"d37-{ctx.run_id}", ctx.api_url, 4, max_seconds=300)
    empty: list[str] = []
    try:
        t_load = load.wait_started()
        # Two scrapes of everything and the rules evaluated after them (the 5-minute budget
        # group, evaluated once at a time of its own: the retries below).
        recorded = prom.wait_recorded(t_load, scrapes=2, timeout=90)
        result.expect(recorded is not None, "two scrapes of every target not seen within 90 s")
        queries = panels()
        for attempt in range(12):
            empty = [
                f"{dash}: {title}: {expr}"
                for dash, title, expr in queries
                if not prom.get("/api/v1/query", query=expr)["result"]
            ]
            if not empty:
                break
            log(f"drill 37: {len(empty)} panel queries without data yet (attempt {attempt + 1})")
            time.sleep(15.0)
        load.stop()
    except BaseException:
        load.kill()
        raise
    result.figures.update(queries=len(queries), empty=len(empty))
    result.expect(not empty, f"panel queries without data: {empty}")
    result.summary = (
        f"{len(queries)} panel queries of {len(list(DASHBOARDS.glob('*.json')))} dashboards "
        f"under load: {len(queries) - len(empty)} with data, {len(empty)} without"
    )
