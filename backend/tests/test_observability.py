"""The edge layer: request ids, access lines, request metrics, unhandled errors."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from heroes.domain import crud
from heroes.errors import ValueRejected
from heroes.lifecycle import begin_draining
from heroes.server.edge import Edge
from heroes.server.observability import _Ids, new_request_id, queued_since

from .logcapture import capture_logs

pytestmark = pytest.mark.anyio

GENERATED = re.compile(r"[0-9a-f]{32}")


def requests_total(method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("heroes_http_requests_total", labels) or 0.0


def latency_count(method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("heroes_http_request_duration_seconds_count", labels) or 0.0


# --- request ids, through the whole application ------------------------------------------------


async def test_generated_id_is_returned_and_on_the_access_line(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        response = await client.get("/heroes/", params={"limit": 5})
    request_id = response.headers["x-request-id"]
    assert GENERATED.fullmatch(request_id)
    [access] = logs.lines("heroes.access")
    assert access.pop("duration_ms") >= 0
    assert access.pop("queued_ms") == 0  # no proxy in front
    del access["ts"], access["pid"]
    assert access == {
        "level": "info",
        "logger": "heroes.access",
        "msg": "GET /heroes/ 200",
        "request_id": request_id,
        "method": "GET",
        "path": "/heroes/",
        "route": "/heroes/",
        "status": 200,
        "client": "127.0.0.1",
        "user_agent": f"python-httpx/{httpx.__version__}",
        "query": "limit=5",
    }


async def test_client_id_is_echoed_and_logged(client: httpx.AsyncClient) -> None:
    sent = "Edge-1.trace:42_a"
    with capture_logs() as logs:
        response = await client.get("/heroes/1", headers={"X-Request-ID": sent})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == sent
    assert [line["request_id"] for line in logs.lines("heroes.access")] == [sent]


async def test_two_requests_get_two_ids(client: httpx.AsyncClient) -> None:
    first = (await client.get("/heroes/")).headers["x-request-id"]
    second = (await client.get("/heroes/")).headers["x-request-id"]
    assert first != second


async def test_every_line_of_a_request_carries_its_id(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def rejected(**_kwargs: object) -> None:
        raise ValueRejected("integer out of range")

    monkeypatch.setattr(crud, "create_hero", rejected)
    with capture_logs() as logs:
        response = await client.post(
            "/heroes/", json={"name": "a", "secret_name": "b"}, headers={"X-Request-ID": "w-1"}
        )
    assert response.status_code == 422
    lines = [line for line in logs.lines() if line["logger"].startswith("heroes.")]
    assert [(line["logger"], line["request_id"]) for line in lines] == [
        ("heroes.errors", "w-1"),  # "database rejected a value", logged by the error handler
        ("heroes.access", "w-1"),
    ]


async def test_unhandled_error_logs_one_traceback_with_the_id_and_answers_a_bare_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**_kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(crud, "get_hero", broken)
    before = requests_total("GET", "/heroes/{hero_id}", 500)
    with capture_logs() as logs:
        # The exception is not re-raised to the server (nor to this client): it was handled.
        response = await client.get("/heroes/1", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert "secret internal detail" not in response.text
    assert response.headers["x-request-id"] == "boom-1"
    with_traceback = [line for line in logs.lines() if "exc" in line]
    assert len(with_traceback) == 1
    [error] = with_traceback
    assert (error["logger"], error["msg"], error["request_id"]) == (
        "heroes.errors",
        "unhandled error",
        "boom-1",
    )
    assert error["exc"].endswith("RuntimeError: secret internal detail")
    assert sum("Traceback" in raw for raw in logs.raw()) == 1
    [access] = logs.lines("heroes.access")
    assert (access["status"], access["request_id"]) == (500, "boom-1")
    assert requests_total("GET", "/heroes/{hero_id}", 500) == before + 1


async def test_body_refused_before_routing_still_gets_an_id(client: httpx.AsyncClient) -> None:
    before = requests_total("POST", "unmatched", 413)
    response = await client.post(
        "/heroes/", content=b"x" * 70_000, headers={"X-Request-ID": "big-1"}
    )
    assert response.status_code == 413
    assert response.headers["x-request-id"] == "big-1"
    assert requests_total("POST", "unmatched", 413) == before + 1


async def test_probes_and_scrapes_have_no_access_line_unless_they_fail(
    client: httpx.AsyncClient,
) -> None:
    with capture_logs() as logs:
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert logs.lines("heroes.access") == []
        begin_draining()  # the app fixture resets it
        assert (await client.get("/health/ready")).status_code == 503
    assert [line["msg"] for line in logs.lines("heroes.access")] == ["GET /health/ready 503"]


def test_generated_ids_are_unique_and_a_forked_worker_makes_its_own() -> None:
    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(GENERATED.fullmatch(request_id) for request_id in ids)
    _Ids.reset()  # what os.register_at_fork runs in a child: a new random prefix
    assert new_request_id()[:16] != ids[0][:16]


# --- route labels ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "route", "status"),
    [
        ("GET", "/heroes/123456", "/heroes/{hero_id}", 404),
        ("GET", "/heroes/not-a-number", "/heroes/{hero_id}", 422),
        ("PUT", "/heroes/1", "/heroes/{hero_id}", 405),
        ("GET", "/heroes/", "/heroes/", 200),
        ("GET", "/health/live", "/health/live", 200),
        ("GET", "/openapi.json", "/openapi.json", 200),  # a plain Starlette route
        ("GET", "/no/such/path", "unmatched", 404),
        ("GET", "/heroes", "unmatched", 307),  # the slash redirect matches no route
        ("BREW", "/heroes/", "/heroes/", 405),  # any token is a method: one label for the rest
    ],
)
async def test_requests_are_counted_by_route_template(
    client: httpx.AsyncClient, method: str, path: str, route: str, status: int
) -> None:
    label = method if method != "BREW" else "OTHER"
    before = requests_total(label, route, status), latency_count(label, route, status)
    response = await client.request(method, path)
    assert response.status_code == status
    after = requests_total(label, route, status), latency_count(label, route, status)
    assert after == (before[0] + 1, before[1] + 1)


def latency_within(route: str, le: str) -> float:
    labels = {"method": "GET", "route": route, "status": "200", "le": le}
    return REGISTRY.get_sample_value("heroes_http_request_duration_seconds_bucket", labels) or 0.0


async def test_time_in_the_proxys_queue_counts_in_the_latency(client: httpx.AsyncClient) -> None:
    before = latency_count("GET", "/heroes/", 200), latency_within("/heroes/", "0.5")
    stamp = f"t={int((time.time() - 0.7) * 1e6)}"  # the proxy had it 0.7 s ago
    with capture_logs() as logs:
        response = await client.get("/heroes/", headers={"X-Request-Start": stamp})
    assert response.status_code == 200
    after = latency_count("GET", "/heroes/", 200), latency_within("/heroes/", "0.5")
    assert after == (before[0] + 1, before[1])  # counted, and slower than 0.5 s
    [access] = logs.lines("heroes.access")
    assert 700 <= access["queued_ms"] < 5000
    assert access["duration_ms"] < access["queued_ms"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"t=1000000000000000", 0.25),  # microseconds, as deploy/haproxy/haproxy.cfg stamps it
        (b"1000000000000000", 0.25),
        (b"t=1000000000250000", 0.0),  # from the future: a clock behind, not a negative wait
        (b"t=999999940000000", 0.0),  # a minute old: not a queue
        (b"t=", 0.0),
        (b"t=1e15", 0.0),
        (b"t=-1000000000000000", 0.0),
        (b"t=" + b"9" * 400, 0.0),
    ],
)
def test_queue_stamps_that_are_not_sane_count_as_no_wait(header: bytes, expected: float) -> None:
    assert queued_since(header, now=1_000_000_000.25) == pytest.approx(expected)


async def test_raw_paths_never_become_labels(client: httpx.AsyncClient) -> None:
    await client.get("/heroes/987654")
    await client.get("/nothing-here-5821")
    routes = {
        sample.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "heroes_http_requests"
        for sample in family.samples
    }
    assert "/heroes/987654" not in routes
    assert "/nothing-here-5821" not in routes
    assert {"/heroes/{hero_id}", "unmatched"} <= routes


async def test_in_flight_gauge_counts_the_scrape_itself(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        body = (await client.get("/metrics")).text
    assert "\nheroes_http_requests_in_progress 1.0\n" in body
    assert REGISTRY.get_sample_value("heroes_http_requests_in_progress") == 0.0


# --- the middleware alone: failures no handler answered -----------------------------------------


async def _run(app: Any, headers: list[tuple[bytes, bytes]] | None = None) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "query_string": b"",
        "headers": headers or [],
        "client": None,
    }
    await Edge(app, max_body_bytes=1024)(scope, receive, send)
    return sent


def _id_header(sent: list[Message]) -> bytes:
    values: list[bytes] = [v for k, v in sent[0]["headers"] if k == b"x-request-id"]
    assert len(values) == 1
    return values[0]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"a" * 129,
        b"has space",
        b"crlf\r\nX-Injected: 1",
        b"caf\xc3\xa9",
        b"<script>",
        b"semi;colon",
    ],
)
async def test_insane_client_ids_are_replaced(value: bytes) -> None:
    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent = await _run(ok, [(b"x-request-id", value)])
    assert GENERATED.fullmatch(_id_header(sent).decode())


async def test_longest_sane_id_is_kept_and_only_the_first_header_counts() -> None:
    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    longest = b"a" * 128
    sent = await _run(ok, [(b"x-request-id", longest), (b"x-request-id", b"second")])
    assert _id_header(sent) == longest


async def test_error_nobody_answered_is_logged_once_and_answered_500() -> None:
    async def crashes(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("no handler in between")

    before = requests_total("GET", "unmatched", 500)
    with capture_logs() as logs:
        sent = await _run(crashes, [(b"x-request-id", b"lone-1")])
    assert sent[0]["status"] == 500
    assert _id_header(sent) == b"lone-1"
    assert sent[1]["body"] == b'{"detail":"Internal Server Error"}'
    [error] = [line for line in logs.lines() if "exc" in line]
    assert (error["request_id"], error["msg"]) == ("lone-1", "unhandled error")
    assert requests_total("GET", "unmatched", 500) == before + 1


async def test_error_after_the_response_started_is_logged_once_and_not_answered_twice() -> None:
    async def breaks_midway(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[", "more_body": True})
        raise RuntimeError("stream broke")

    with capture_logs() as logs:
        sent = await _run(breaks_midway)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert len([line for line in logs.lines() if "exc" in line]) == 1
    [access] = logs.lines("heroes.access")
    assert access["status"] == 200


async def test_request_that_ends_without_a_response_counts_as_499() -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    before = requests_total("GET", "unmatched", 499)
    assert await _run(silent) == []
    assert requests_total("GET", "unmatched", 499) == before + 1


async def test_lifespan_passes_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        return None

    await Edge(app, max_body_bytes=1024)({"type": "lifespan"}, nothing, ignore)
    assert seen == ["lifespan"]
