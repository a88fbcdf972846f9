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
from sqlalchemy.ext.asyncio import create_async_engine

from heroes import __version__, metrics

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


async def test_scrape_lists_every_family_with_its_type(
    client: httpx.AsyncClient, backend: str
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
        "heroes_build_info": "gauge",
    }
    [build] = families["heroes_build_info"].samples
    assert build.labels == {"version": __version__, "python": platform.python_version()}
    assert build.value == 1.0
    pool = {
        f: families[f].samples[0].value
        for f in ("heroes_db_pool_size", "heroes_db_pool_checked_out")
    }
    # On PostgreSQL the test holds one connection: the transaction it rolls back afterwards.
    assert pool == {
        "heroes_db_pool_size": 5.0,
        "heroes_db_pool_checked_out": 1.0 if backend == "postgres" else 0.0,
    }


async def test_metrics_is_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


def pool_values() -> tuple[float | None, ...]:
    names = ("heroes_db_pool_size", "heroes_db_pool_checked_out", "heroes_db_pool_overflow")
    return tuple(REGISTRY.get_sample_value(name) for name in names)


async def test_pool_gauges_show_checked_out_and_overflow(tmp_path: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=1, max_overflow=2
    )
    try:
        metrics.sample_pool(engine)
        assert pool_values() == (1.0, 0.0, 0.0)
        async with engine.connect(), engine.connect():
            metrics.sample_pool(engine)
            assert pool_values() == (1.0, 2.0, 1.0)  # the second connection is an overflow
    finally:
        await engine.dispose()


async def test_sampler_refreshes_the_gauges_between_scrapes(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=3)
    try:
        async with metrics.pool_sampler(engine, interval=0.01):
            assert pool_values() == (3.0, 0.0, 0.0)  # sampled on entry
            async with engine.connect():
                await asyncio.sleep(0.1)
                assert pool_values() == (3.0, 1.0, 0.0)
    finally:
        await engine.dispose()


def test_pools_without_a_size_are_left_alone() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")  # in-memory: a StaticPool
    metrics.POOL_SIZE.set(7)
    metrics.sample_pool(engine)
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
