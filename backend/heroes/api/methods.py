"""405 answers that tell the truth: ``Allow`` lists every method of the path.

Each method of a path is its own route, so the router's own 405 names only the methods of the
first route whose path matched: ``PUT /heroes/1`` said ``Allow: GET``. One catch-all route per
path, added after the others, answers every method no route takes, with all of them.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.types import Receive, Scope, Send


class MethodNotAllowed:
    """An ASGI endpoint (not a function), so its route takes every method."""

    def __init__(self, allowed: set[str]) -> None:
        self.allow = ", ".join(sorted(allowed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Raised, not sent: the application's exception handlers write the answer.
        raise HTTPException(
            status_code=405, detail="Method Not Allowed", headers={"Allow": self.allow}
        )


def add_method_not_allowed(app: FastAPI) -> None:
    """Call after every route is added."""
    methods: dict[str, set[str]] = {}
    for route in iter_route_contexts(app.routes):  # included routers are not flattened
        if isinstance(route.original_route, APIRoute) and route.path and route.methods:
            methods.setdefault(route.path, set()).update(route.methods)
    for path, allowed in methods.items():
        app.add_route(path, MethodNotAllowed(allowed), include_in_schema=False)  # type: ignore[arg-type]
