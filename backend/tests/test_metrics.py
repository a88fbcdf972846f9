"""/metrics: the exposition, the pool gauges, build info (single-process registry; the
multiprocess mode is exercised under a real gunicorn in test_gunicorn_metrics.py)."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.dialects import sqlite

from heroes import __version__, metrics
from heroes.db import Database

from .test_pool import fake_pool

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


async def test_scrape_lists_every_family_with_its_type(client: httpx.AsyncClient) -> None:
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
        "heroes_build_info": "gauge",
    }
    [build] = families["heroes_build_info"].samples
    assert build.labels == {"version": __version__, "python": platform.python_version()}
    assert build.value == 1.0
    pool = {
        f: families[f].samples[0].value
        for f in ("heroes_db_pool_size", "heroes_db_pool_checked_out")
    }
    assert pool == {"heroes_db_pool_size": 5.0, "heroes_db_pool_checked_out": 0.0}


async def test_metrics_is_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


def pool_values() -> tuple[float | None, ...]:
    names = ("heroes_db_pool_size", "heroes_db_pool_checked_out", "heroes_db_pool_overflow")
    return tuple(REGISTRY.get_sample_value(name) for name in names)


async def test_pool_gauges_show_checked_out_and_overflow() -> None:
    db = Database(fake_pool(size=1, max_overflow=2), sqlite.dialect())
    metrics.sample_pool(db)
    assert pool_values() == (1.0, 0.0, 0.0)
    async with db.source.connection(), db.source.connection():
        metrics.sample_pool(db)
        assert pool_values() == (1.0, 2.0, 1.0)  # the second connection is an overflow


async def test_sampler_refreshes_the_gauges_between_scrapes() -> None:
    db = Database(fake_pool(size=3, max_overflow=0), sqlite.dialect())
    async with metrics.pool_sampler(db, interval=0.01):
        assert pool_values() == (3.0, 0.0, 0.0)  # sampled on entry
        async with db.source.connection():
            await asyncio.sleep(0.1)
            assert pool_values() == (3.0, 1.0, 0.0)


def test_connection_sources_other_than_the_pool_are_left_alone() -> None:
    metrics.POOL_SIZE.set(7)
    metrics.sample_pool(Database(object(), sqlite.dialect()))  # type: ignore[arg-type]
    assert REGISTRY.get_sample_value("heroes_db_pool_size") == 7.0


def test_multiprocess_render_reads_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Empty directory: nothing written yet by any worker, so nothing to merge.
    monkeypatch.setattr(metrics, "MULTIPROC_DIR", str(tmp_path))
    assert metrics.render() == b""


def test_scrape_config_targets_the_metrics_route_on_the_api_port() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"heroes", "heroes-kubernetes-pods"}
    assert jobs["heroes"]["metrics_path"] == "/metrics"
    assert jobs["heroes"]["static_configs"][0]["targets"] == ["api:8000"]
    pods = jobs["heroes-kubernetes-pods"]
    assert pods["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert pods["relabel_configs"][0]["regex"] == "heroes;api"


def test_multiprocess_mode_buffers_requests_until_the_next_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "MULTIPROC_DIR", "/dev/shm/unused")
    labels = {"method": "GET", "route": "/buffered", "status": "200"}
    before = REGISTRY.get_sample_value("heroes_http_requests_total", labels) or 0.0
    metrics.observe("GET", "/buffered", 200, 0.004)
    metrics.observe("GET", "/buffered", 200, 0.006)
    assert (REGISTRY.get_sample_value("heroes_http_requests_total", labels) or 0.0) == before
    metrics.sample_pool(Database(object(), sqlite.dialect()))  # type: ignore[arg-type]
    assert REGISTRY.get_sample_value("heroes_http_requests_total", labels) == before + 2
