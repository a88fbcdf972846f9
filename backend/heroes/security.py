"""Optional bearer tokens for writes (and, if configured, reads)."""

from __future__ import annotations

import hmac
from typing import Any

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


# async: FastAPI runs a plain ``def`` dependency in its thread pool, a costly hop per request.
async def require_token(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if not token_is_valid(request.headers.get("authorization"), settings.token_values):
        raise HTTPException(
            status_code=401,
            detail="Missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def token_dependencies(settings: Settings, *, writes: bool) -> list[Any]:
    """The dependencies of a group of routes: none at all (not even a no-op) when open."""
    protected = bool(settings.api_tokens) and (writes or settings.auth_protect_reads)
    return [Depends(require_token)] if protected else []
