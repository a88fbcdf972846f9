"""The body limit is enforced at the edge, before any parsing."""

from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from heroes.server.edge import Edge
from heroes.server.limits import counted

pytestmark = pytest.mark.anyio


async def _call(headers: list[tuple[bytes, bytes]], body: bytes = b"") -> list[Message]:
    reached: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(True)

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/heroes/", "headers": headers}
    await Edge(app, max_body_bytes=1024)(scope, receive, send)
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


async def test_small_bodies_reach_the_app() -> None:
    assert await _call([(b"content-length", b"10")]) == [{"type": "reached-app"}]
    assert await _call([(b"content-length", b"1024")]) == [{"type": "reached-app"}]


async def test_a_body_without_length_is_refused_once_it_passes_the_limit() -> None:
    chunks = [b"x" * 600, b"x" * 600]

    async def receive() -> Message:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    limited = counted(receive, max_bytes=1024)
    assert (await limited())["body"] == b"x" * 600
    with pytest.raises(HTTPException) as raised:
        await limited()
    assert raised.value.status_code == 413


async def test_lifespan_passes_through() -> None:
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        return None

    await Edge(app, max_body_bytes=1024)({"type": "lifespan"}, nothing, ignore)
    assert reached == ["lifespan"]
