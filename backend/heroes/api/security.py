"""Optional bearer tokens for writes (and, if configured, reads)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer

from heroes.config import Settings

#: How a 401 is documented on the protected operations.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Missing or invalid bearer token",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
    }
}


def token_is_valid(authorization: str | None, tokens: tuple[bytes, ...]) -> bool:
    """Compare against every configured token in constant time, so timing reveals neither
    which token matched nor how much of one did."""
    scheme, _, presented = (authorization or "").partition(" ")
    candidate = presented.strip().encode() if scheme.lower() == "bearer" else b""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(candidate, token)
    return matched and bool(candidate)


class BearerToken(HTTPBearer):
    """The token check as an OpenAPI security scheme: the schema declares HTTP bearer auth on
    the protected operations, so Swagger UI's "Authorize" sends the header on "Try it out"."""

    def __init__(self) -> None:
        super().__init__(
            scheme_name="bearerAuth",
            description="One of the API_TOKENS configured on the server.",
            auto_error=False,
        )

    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a costly hop per request.
    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        settings: Settings = request.app.state.settings
        if not token_is_valid(request.headers.get("authorization"), settings.token_values):
            raise HTTPException(
                status_code=401,
                detail="Missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )


require_token = BearerToken()


@dataclass(frozen=True, slots=True)
class Protection:
    """What a group of routes (reads, or writes) gets from the token check."""

    dependencies: list[Any]
    responses: dict[int | str, dict[str, Any]]


def protection(settings: Settings, *, writes: bool) -> Protection:
    """The token dependency and its 401 for a group of routes when protected; none at all (not
    even a no-op dependency: each costs a pass of FastAPI's dependency solver) when open."""
    protected = bool(settings.api_tokens) and (writes or settings.auth_protect_reads)
    if not protected:
        return Protection(dependencies=[], responses={})
    return Protection(dependencies=[Depends(require_token)], responses=UNAUTHORIZED)
