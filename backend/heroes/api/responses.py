"""What every resource's router shares: the JSON body helper, the error model and the answers
each operation documents besides its own."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from heroes.domain.idempotency import encode

#: The schema's description: what no single operation can say (405 belongs to no operation).
DESCRIPTION = """
The Hero API of the FastAPI SQL tutorial: same paths, operation ids, models and bodies.

**Errors** are JSON objects with a `detail`:

| status | when |
| --- | --- |
| 400 | invalid `Content-Length`, a body that cannot be decoded, a malformed \
`Idempotency-Key`, an invalid `cursor` |
| 401 | a protected operation without a valid `Authorization: Bearer <token>` (only when the \
server has API tokens: then "Authorize" takes one) |
| 404 | no hero with that id; unknown paths |
| 405 | a method the path does not support; the `Allow` header lists those it does |
| 409 | a request with the same `Idempotency-Key` is still being processed |
| 413 | a body larger than the server's limit (64 KiB by default) |
| 422 | invalid parameters or body (`detail` lists each problem), or an `Idempotency-Key` \
reused for a different request |
| 503 | the database is unavailable; `Retry-After` says when to try again |
"""


class ErrorDetail(BaseModel):
    """The body of every error answer but 422 (whose ``detail`` lists the invalid fields)."""

    detail: str


def error_answer(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    """An error answer of the OpenAPI document: an ErrorDetail body (header names with ``_``
    for ``-``)."""
    answer: dict[str, Any] = {"description": description, "model": ErrorDetail}
    if headers:
        answer["headers"] = {name.replace("_", "-"): schema for name, schema in headers.items()}
    return answer


Responses = dict[int | str, dict[str, Any]]

RETRY_AFTER = {"description": "Seconds to wait", "schema": {"type": "integer"}}
#: Every operation's (a router's ``responses``).
COMMON: Responses = {
    400: error_answer(
        "Invalid Content-Length, or a body that is not decodable (bad UTF-8, too deep)"
    ),
    413: error_answer("Request body larger than MAX_BODY_BYTES"),
    503: error_answer(
        "Database unavailable; try again after Retry-After. A write answered 503 may or may not "
        "have been applied (its connection was lost mid-way): retry it with the same "
        "Idempotency-Key, which applies it exactly once",
        Retry_After=RETRY_AFTER,
    ),
}
#: A list operation's: the next page's link, an invalid cursor.
PAGED: Responses = {
    200: {
        "description": "Successful Response",
        "headers": {
            "Link": {
                "description": '`<...>; rel="next"`: the next page by cursor, with the same '
                "filters and limit; absent on the last page",
                "schema": {"type": "string"},
            }
        },
    },
    400: error_answer("Invalid Content-Length, an invalid cursor, or a cursor sent with an offset"),
}


def not_found(resource: str) -> Responses:
    """The 404 of an operation on one ``resource`` by id (heroes.errors.NotFound)."""
    return {404: error_answer(f"{resource} not found")}


def json_response(content: Any) -> Response:
    """A JSON body as the routes send it (and as heroes.domain.idempotency stores it)."""
    return Response(encode(content), media_type="application/json")
