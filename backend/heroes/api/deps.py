"""What routes declare they need, as ``Annotated`` aliases: ``SessionDep`` (the request's
database access) and ``IdempotencyDep`` (the ``Idempotency-Key`` header, heroes.api.idempotency)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from heroes.api.idempotency import IdempotencyDep
from heroes.db import Session

__all__ = ["IdempotencyDep", "SessionDep", "get_session"]


# async: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request.
async def get_session(request: Request) -> Session:
    """A Session on the worker's database (built in the lifespan): each statement takes a pooled
    connection for itself, so nothing is held or closed when the request ends."""
    return Session(request.app.state.db)


SessionDep = Annotated[Session, Depends(get_session)]
