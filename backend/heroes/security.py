"""Optional bearer tokens for writes (and, if configured, reads)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from heroes.config import Settings


def token_is_valid(authorization: str | None, tokens: tuple[bytes, ...]) -> bool:
    """Compare against every configured token in constant time, so timing reveals neither
    which token matched nor how much of one did."""
    scheme, _, presented = (authorization or "").partition(" ")
    candidate = presented.strip().encode() if scheme.lower() == "bearer" else b""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(candidate, token)
    return matched and bool(candidate)


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=401,
        detail="Missing or invalid bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )


# async: FastAPI runs a plain ``def`` dependency in its thread pool, a costly hop per request.
async def require_writer(request: Request) -> None:
    settings: Settings = request.app.state.settings
    tokens = settings.token_values
    if tokens and not token_is_valid(request.headers.get("authorization"), tokens):
        raise _unauthorized()


async def require_reader(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if settings.auth_protect_reads:
        await require_writer(request)


Writer = Annotated[None, Depends(require_writer)]
Reader = Annotated[None, Depends(require_reader)]
