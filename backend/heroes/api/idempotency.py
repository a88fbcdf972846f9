"""The ``Idempotency-Key`` request header (IETF httpapi draft "The Idempotency-Key HTTP Header
Field") on the write routes: its parsing, its OpenAPI answers, and ``once``, which a write route
calls with its query function (the unit of work is heroes.domain.idempotency.once)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel

from heroes.api.responses import RETRY_AFTER, Responses, error_answer, json_response
from heroes.config import Settings
from heroes.db import Session
from heroes.domain import idempotency
from heroes.domain.idempotency import IdempotentRequest
from heroes.errors import IdempotencyKeyInvalid

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX = 255
# The draft's value is a Structured Field string ("..."); the bare form is accepted too, as
# most clients send it. The characters are those of UUIDs, ULIDs and base64 tokens.
_CHARS = rf"[A-Za-z0-9._:~+/=-]{{1,{KEY_MAX}}}"
KEY_PATTERN = rf'^(?:{_CHARS}|"{_CHARS}")$'
_KEY = re.compile(KEY_PATTERN)

HEADER_DESCRIPTION = (
    "Makes the request safe to retry: the first request with a key is processed and its answer "
    "stored for 24 h; a retry with the same key and the same request gets that answer again "
    f"(with `{REPLAYED_HEADER}: true`) and writes nothing. 1-255 characters of "
    "`A-Z a-z 0-9 - _ . : ~ + / =`, optionally in double quotes (a Structured Field string); "
    "scoped to the bearer token when API tokens are configured."
)

#: What a write operation that takes the header documents besides its own answers.
RESPONSES: Responses = {
    200: {
        "description": "Successful Response",
        "headers": {
            REPLAYED_HEADER: {
                "description": "`true` when this is the stored answer to an earlier request "
                "with the same Idempotency-Key (nothing was written this time)",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
    },
    400: error_answer(
        "Invalid Content-Length, a body that is not decodable, or a malformed Idempotency-Key"
    ),
    409: error_answer(
        "A request with the same Idempotency-Key is still being processed",
        Retry_After=RETRY_AFTER,
    ),
    422: {
        "description": "Validation Error, or the Idempotency-Key was used for a different request",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/HTTPValidationError"},
                        {"$ref": "#/components/schemas/ErrorDetail"},
                    ]
                }
            }
        },
    },
}


def parse_key(value: str) -> str:
    if _KEY.fullmatch(value) is None:
        raise IdempotencyKeyInvalid(
            f"{HEADER} must be 1-{KEY_MAX} characters of A-Z a-z 0-9 - _ . : ~ + / =, "
            "optionally in double quotes"
        )
    return value.strip('"')


def token_scope(authorization: str | None) -> str:
    """A digest of the bearer token (checked by heroes.api.security): its keys' namespace."""
    _, _, token = (authorization or "").partition(" ")
    return hashlib.sha256(token.strip().encode()).hexdigest()


async def idempotent_request(
    request: Request,
    key: Annotated[str | None, Header(alias=HEADER, description=HEADER_DESCRIPTION)] = None,
) -> IdempotentRequest | None:
    if key is None:
        return None
    if len(request.headers.getlist(HEADER)) > 1:
        raise IdempotencyKeyInvalid(f"send one {HEADER} header, not several")
    settings: Settings = request.app.state.settings
    scope = token_scope(request.headers.get("authorization")) if settings.api_tokens else ""
    return IdempotentRequest(
        scope=scope,
        key=parse_key(key),
        target=f"{request.method} {request.scope['path']}\n",
        ttl_s=settings.idempotency_ttl_s,
        in_flight=request.app.state.keys_in_flight,
    )


IdempotencyDep = Annotated[IdempotentRequest | None, Depends(idempotent_request)]


async def once(
    request: IdempotentRequest | None,
    session: Session,
    payload: BaseModel | None,
    write: Callable[[], Awaitable[Any]],
) -> Response:
    """What a write route returns: ``write()`` (its query function) as JSON; with a key, run
    once per key and replayed to its retries (heroes.domain.idempotency.once)."""
    if request is None:
        return json_response(await write())
    body, replayed = await idempotency.once(
        session=session, request=request, payload=payload, write=write
    )
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return Response(body, media_type="application/json", headers=headers)
