"""What the routes take from the request.

The session is not a FastAPI dependency (``Depends``): each dependency costs the request a pass of
FastAPI's dependency solver, measured at ~30 us, 8 % of a GET one's CPU, for what is one
attribute lookup. The routes take the ``Request`` (FastAPI builds it for every request anyway)
and ask for the session here.
"""

from __future__ import annotations

from fastapi import Request

from heroes.db import Session


def session(request: Request) -> Session:
    return Session(request.app.state.db)
