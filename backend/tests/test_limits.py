"""The body limit is enforced by the ASGI middleware before any parsing."""

from __future__ import annotations

import pytest
from starlette.types import Message

from heroes.limits import BodySizeLimit

pytestmark = pytest.mark.anyio


async def _call(headers: list[tuple[bytes, bytes]], body: bytes = b"") -> list[Message]:
    reached: list[bool] = []

    async def app(scope: object, receive: object, send: object) -> None:
        reached.append(True)

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/heroes/", "headers": headers}
    await BodySizeLimit(app, max_bytes=1024)(scope, receive, send)
    if reached:
        sent.append({"type": "reached-app"})
    return sent


async def test_declared_length_over_limit_is_413_without_reaching_the_app() -> None:
    sent = await _call([(b"content-length", b"1025")])
    assert sent[0]["status"] == 413
    assert sent[-1]["body"] == b'{"detail":"Request body too large"}'


async def test_non_numeric_length_is_400() -> None:
    sent = await _call([(b"content-length", b"-5")])
    assert sent[0]["status"] == 400


async def test_lifespan_and_small_bodies_pass_through() -> None:
    assert await _call([(b"content-length", b"10")]) == [{"type": "reached-app"}]
    reached: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        reached.append("lifespan")

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        return None

    await BodySizeLimit(app, max_bytes=1024)({"type": "lifespan"}, nothing, ignore)
    assert reached == ["lifespan"]
