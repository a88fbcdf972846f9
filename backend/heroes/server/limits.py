"""The request-body limit: a declared Content-Length is judged before anything runs (400/413);
a body without one is counted as it is read, and reading past the limit raises 413."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive

from heroes.api.errors import error

TOO_LARGE = "Request body too large"


def refusal(content_length: bytes | None, max_bytes: int) -> ASGIApp | None:
    """The answer to a request whose Content-Length is invalid or over the limit, else None."""
    if content_length is None:
        return None
    if not content_length.isdigit():
        return error(400, "Invalid Content-Length")
    if int(content_length) > max_bytes:
        return error(413, TOO_LARGE)
    return None


def counted(receive: Receive, max_bytes: int) -> Receive:
    """``receive`` for a body of undeclared length (chunked): 413 once it exceeds the limit.

    A body with a Content-Length needs no counting: the server reads exactly that many bytes.
    """
    received = 0

    async def counted_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                # Raised inside the route's body read, so the normal handlers answer 413.
                raise HTTPException(status_code=413, detail=TOO_LARGE)
        return message

    return counted_receive
