"""The application factory; the database pool lives in the lifespan: each worker builds its own."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp

from heroes import __version__
from heroes.api import health, heroes
from heroes.api.docs import add_docs, add_edge_answers
from heroes.api.errors import register_error_handlers
from heroes.api.methods import add_method_not_allowed
from heroes.api.responses import DESCRIPTION
from heroes.config import Settings, get_settings
from heroes.db import create_database
from heroes.db.migrate import SchemaExpectation
from heroes.domain import idempotency
from heroes.server import background, metrics, tracing
from heroes.server.edge import Edge

#: Allocations (net of deallocations) that trigger a collection of the young generation.
YOUNG_GC_THRESHOLD = 10_000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    tracing.setup()  # in the worker, after gunicorn's fork; nothing unless OTEL_* asks for it
    app.state.db = create_database(settings)
    await app.state.db.open()
    app.state.schema = SchemaExpectation.of(settings)
    app.state.keys_in_flight = idempotency.KeysInFlight()
    # Kept for the benchmark's guard (docs/performance.md, "Speed devices"): start-up objects out
    # of the collector's reach, and young collections rarer (a request's objects die by refcount).
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    interval = metrics.POOL_SAMPLE_SECONDS if metrics.MULTIPROC_DIR else None
    try:
        async with (
            metrics.pool_sampler(app.state.db, interval),
            background.running(
                idempotency.purge_forever(app.state.db, settings.idempotency_purge_interval_s),
                "idempotency-purge",
            ),
        ):
            yield
    finally:
        await app.state.db.close()


class HeroesAPI(FastAPI):
    """FastAPI with heroes.server.edge outside everything, even outside Starlette's
    ServerErrorMiddleware (``add_middleware`` can only go inside it): a 500 gets a request id and
    is counted like any other answer."""

    def build_middleware_stack(self) -> ASGIApp:
        settings: Settings = self.state.settings
        paths = {route.endpoint: route.path for route in self.routes if isinstance(route, Route)}
        edge = Edge(
            super().build_middleware_stack(),
            max_body_bytes=settings.max_body_bytes,
            route_paths=paths,
        )
        return tracing.wrap(edge)  # the app itself unless tracing is on


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    docs = settings.docs_enabled
    app = HeroesAPI(
        title="Heroes",
        version=__version__,
        summary="The Hero API of the FastAPI SQL tutorial, production-shaped.",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=tracing.TELEMETRY,
        # FastAPI's own pages load their assets from CDNs: heroes.api.docs serves them itself.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    register_error_handlers(app)
    app.include_router(heroes.router(settings))
    app.include_router(health.router)
    app.include_router(metrics.router)
    if docs:
        add_docs(app, openapi_url="/openapi.json")
    add_method_not_allowed(app)
    add_edge_answers(app)  # the proxy's 429/503 (deploy/haproxy/haproxy.cfg)
    return app
