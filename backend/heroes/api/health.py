"""Liveness (the process answers) and readiness (database reachable, schema at head)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import State

from heroes import __version__
from heroes.config import Settings
from heroes.db import Session
from heroes.db.migrate import SchemaExpectation, current_revision
from heroes.errors import DatabaseUnavailable, SchemaMissing
from heroes.lifecycle import is_draining

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live(request: Request) -> dict[str, str]:
    """The process is up; checks no dependency, so a database outage never restarts the API.
    Also says which build answers (BUILD_VERSION / BUILD_REVISION, set in the image)."""
    settings: Settings = request.app.state.settings
    version = settings.build_version or __version__
    return {"status": "ok", "version": version, "revision": settings.build_revision}


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)


def _revision_check(state: State) -> asyncio.Task[str | None]:
    """The schema's revision, read in a task of its own that a probe giving up does not cancel:
    a cancelled statement is first cancelled on the server, over what may be a silent network
    (seconds more). It ends by itself, within the database layer's deadlines. Not shared between
    probes: a check still waiting for a connection when the database comes back must not keep
    answering for the probes after it (each new one asks the pool, which then grows)."""
    check = asyncio.get_running_loop().create_task(current_revision(Session(state.db)))
    # Retrieved here, so a failure no probe waited for is not reported as never retrieved.
    check.add_done_callback(lambda t: t.cancelled() or t.exception())
    return check


@router.get(
    "/ready",
    responses={503: {"description": "Not ready: database down, schema not at head, or draining"}},
)
async def ready(request: Request) -> JSONResponse:
    """Ready to serve: the database answers within READY_TIMEOUT and its schema is at head."""
    if is_draining():
        return _unavailable("shutting down")
    try:
        async with asyncio.timeout(request.app.state.settings.ready_timeout):
            revision = await asyncio.shield(_revision_check(request.app.state))
    except TimeoutError:
        return _unavailable("database did not answer in time")
    except SchemaMissing:
        return _unavailable("schema not migrated")
    except DatabaseUnavailable as exc:
        return _unavailable(f"database unavailable ({type(exc.__cause__ or exc).__name__})")
    schema: SchemaExpectation = request.app.state.schema
    if not schema.accepts(revision):
        return _unavailable(schema.describe(revision))
    return JSONResponse({"status": "ready", "revision": revision})
