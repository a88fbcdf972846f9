"""/metrics: the exposition, the pool gauges, build info (single-process registry; the
multiprocess mode is exercised under a real gunicorn in test_gunicorn_metrics.py)."""

from __future__ import annotations

import asyncio
import platform
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from heroes import __version__
from heroes.config import Settings
from heroes.db import Database
from heroes.db.postgres import PostgresDatabase
from heroes.server import metrics

from .conftest import running_app

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


async def test_scrape_lists_every_family_with_its_type(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await client.get("/heroes/")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    types = {name: families[name].type for name in families if name.startswith("heroes_")}
    assert types == {
        "heroes_http_requests": "counter",
        "heroes_http_request_duration_seconds": "histogram",
        "heroes_http_requests_in_progress": "gauge",
        "heroes_db_pool_size": "gauge",
        "heroes_db_pool_checked_out": "gauge",
        "heroes_db_pool_overflow": "gauge",
        "heroes_db_connections_opened": "gauge",
        "heroes_build_info": "gauge",
    }
    [build] = families["heroes_build_info"].samples
    assert build.labels == {"version": __version__, "python": platform.python_version()}
    assert build.value == 1.0
    pool = {
        f: families[f].samples[0].value
        for f in ("heroes_db_pool_size", "heroes_db_pool_checked_out")
    }
    size = float(app.state.db.stats().size)
    assert pool == {"heroes_db_pool_size": size, "heroes_db_pool_checked_out": 0.0}


async def test_metrics_is_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


def pool_values() -> tuple[float | None, ...]:
    names = ("heroes_db_pool_size", "heroes_db_pool_checked_out", "heroes_db_pool_overflow")
    return tuple(REGISTRY.get_sample_value(name) for name in names)


async def settled(db: Database) -> Database:
    """The database once its pool has opened its minimum (it does so in the background)."""
    if isinstance(db, PostgresDatabase):
        await db.pool.wait(timeout=10)
    return db


async def test_pool_gauges_show_connections_in_use(app: FastAPI) -> None:
    db = await settled(app.state.db)
    size = float(db.stats().size)
    metrics.sample_pool(db)
    assert pool_values() == (size, 0.0, 0.0)
    async with db.connection():
        metrics.sample_pool(db)
        assert pool_values() == (size, 1.0, 0.0)


@pytest.mark.postgres_only
async def test_pool_gauges_count_connections_beyond_the_pool_size(pg_settings: Settings) -> None:
    async with running_app(pg_settings) as app, AsyncExitStack() as stack:
        db = await settled(app.state.db)
        size = db.stats().size
        for _ in range(size + 1):
            await stack.enter_async_context(db.connection())
        metrics.sample_pool(db)
        assert pool_values() == (float(size), float(size + 1), 1.0)


async def test_sampler_refreshes_the_gauges_between_scrapes(app: FastAPI) -> None:
    db = app.state.db
    async with metrics.pool_sampler(db, interval=0.01):
        assert pool_values()[1] == 0.0  # sampled on entry
        async with db.connection():
            await asyncio.sleep(0.1)
            assert pool_values()[1] == 1.0


def test_multiprocess_render_reads_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Empty directory: nothing written yet by any worker, so nothing to merge.
    monkeypatch.setattr(metrics, "MULTIPROC_DIR", str(tmp_path))
    assert metrics.render() == b""


def test_scrape_configs_target_each_replica_on_the_api_port() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in compose["scrape_configs"]}
    assert jobs["api"]["metrics_path"] == "/metrics"
    # one target per replica (DNS service discovery), never the service name as one target
    assert jobs["api"]["dns_sd_configs"] == [
        {"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "5s"}
    ]
    k8s = yaml.safe_load((REPO / "deploy" / "prometheus" / "kubernetes.yml").read_text())
    pods = {job["job_name"]: job for job in k8s["scrape_configs"]}["heroes-kubernetes-pods"]
    assert pods["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert pods["relabel_configs"][0]["regex"] == "heroes;api"
    assert pods["relabel_configs"][-1] == {"target_label": "job", "replacement": "api"}


def test_multiprocess_mode_counts_each_request_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MULTIPROC_DIR", "/dev/shm/unused")
    labels = {"method": "GET", "route": "/at-once", "status": "200"}
    before = REGISTRY.get_sample_value("heroes_http_requests_total", labels) or 0.0
    metrics.observe("GET", "/at-once", 200, 0.004)
    metrics.observe("GET", "/at-once", 200, 0.006)
    assert REGISTRY.get_sample_value("heroes_http_requests_total", labels) == before + 2
