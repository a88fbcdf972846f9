"""Prometheus metrics and the ``/metrics`` endpoint.

Single process (tests, ``heroes serve``): prometheus_client's default registry. Under gunicorn,
``PROMETHEUS_MULTIPROC_DIR`` (a tmpfs: /dev/shm/heroes-metrics) switches prometheus_client to its
multiprocess mode: every worker writes its values to mmap'ed files there and a scrape, answered by
any worker, merges the files of all workers. gunicorn.conf.py empties the directory in
``on_starting`` and drops a dead worker's live gauges in ``child_exit``.
"""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from heroes import __version__
from heroes.db import Database
from heroes.server import background

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROC_DIR:  # gunicorn's on_starting creates it; `heroes` under a bare uvicorn may not
    Path(MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

# The *_created series double the output of the single-process registry (the multiprocess one
# never has them): the same metrics in both modes.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Label of every request that matched no route (404s, redirects, bodies refused before routing).
UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds between pool samples of each worker in multiprocess mode (see pool_sampler).
POOL_SAMPLE_SECONDS = 1.0
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABELS = ("method", "route", "status")

REQUESTS = Counter(
    "heroes_http_requests", "HTTP requests answered, by method, route template and status", LABELS
)
LATENCY = Histogram(
    "heroes_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by method, route and status",
    LABELS,
    buckets=LATENCY_BUCKETS,
)
IN_PROGRESS = Gauge(
    "heroes_http_requests_in_progress",
    "HTTP requests being served (all live workers)",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "heroes_db_pool_size",
    "Configured size of the database connection pools (all live workers)",
    multiprocess_mode="livesum",
)
POOL_CHECKED_OUT = Gauge(
    "heroes_db_pool_checked_out",
    "Database connections in use by requests (all live workers)",
    multiprocess_mode="livesum",
)
POOL_OVERFLOW = Gauge(
    "heroes_db_pool_overflow",
    "Database connections open beyond the pool size (all live workers)",
    multiprocess_mode="livesum",
)
CONNECTIONS_OPENED = Gauge(
    "heroes_db_connections_opened",
    "Database connections opened since start (all live workers); flat under a steady load",
    multiprocess_mode="livesum",
)
BUILD_INFO = Gauge(
    "heroes_build_info",
    "Always 1; the labels say which build is running",
    ["version", "python"],
    multiprocess_mode="livemax",
)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)

# Label lookups validate and lock on every call; the children are cached per label set (bounded:
# methods are normalised, routes are templates, statuses are the ones the application sends).
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _children_of(key: tuple[str, str, int]) -> tuple[Any, Any]:
    children = _children.get(key)
    if children is None:
        method, route, status = key
        labels = (method, route, str(status))
        children = _children[key] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
    return children


def observe(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration."""
    if method not in KNOWN_METHODS:  # any token is a valid method: keep the label set bounded
        method = "OTHER"
    counter, histogram = _children_of((method, route, status))
    counter.inc()
    histogram.observe(seconds)


def sample_pool(db: Database) -> None:
    """Copy this process' pool state into the metrics."""
    stats = db.stats()
    POOL_SIZE.set(stats.size)
    POOL_CHECKED_OUT.set(stats.in_use)
    POOL_OVERFLOW.set(max(0, stats.open - stats.size))
    CONNECTIONS_OPENED.set(stats.opened_total)


@asynccontextmanager
async def pool_sampler(db: Database, interval: float | None) -> AsyncIterator[None]:
    """Sample the pool every ``interval`` seconds while the app runs (None: only at scrapes).

    A scrape is answered by one worker, which can only read its own pool: in multiprocess mode
    every worker keeps its share of the summed gauges at most ``interval`` seconds old.
    """
    sample_pool(db)
    if interval is None:
        yield
        return

    async def sample_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            sample_pool(db)

    async with background.running(sample_forever(), "pool-sampler"):
        yield


def render() -> bytes:
    """The text exposition: every worker's files in multiprocess mode, else this process."""
    if MULTIPROC_DIR:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=MULTIPROC_DIR)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus scrape endpoint."""
    sample_pool(request.app.state.db)
    body = await anyio.to_thread.run_sync(render)  # reads every worker's files: off the loop
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)  # what generate_latest writes
