"""heroes.server.tracing: opt-in OpenTelemetry traces, checked end to end with real gunicorn workers
(the SDK set up after the fork), real PostgreSQL and an OTLP/HTTP receiver in the test that
decodes what the exporter sends with opentelemetry-proto."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from heroes.server import tracing

from .gunicorn_server import Gunicorn


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start: int
    end: int
    attributes: dict[str, Any]
    service: str


class Collector:
    """An OTLP/HTTP traces endpoint (POST /v1/traces, protobuf) on a free loopback port."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                collector.add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes
                 if a.key == "service.name"), "",
            )  # fmt: skip
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in s.attributes}
                    with self.lock:
                        self.spans.append(Span(
                            s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                            s.kind, s.start_time_unix_nano, s.end_time_unix_nano, attributes,
                            service,
                        ))  # fmt: skip

    def of(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait(self, trace_id: str, count: int, timeout: float = 15) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.of(trace_id)
            if len(spans) >= count:
                return spans
            time.sleep(0.05)
        raise AssertionError(f"{len(self.of(trace_id))} spans of {trace_id} after {timeout}s")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def ancestors(span: Span, spans: list[Span]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    out = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        out.append(span.span_id)
    return out


def traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


@pytest.mark.postgres_only
def test_a_request_with_a_traceparent_gives_its_spans_and_log_line_that_trace_id(
    tmp_path: Path, collector: Collector, pg_migrated_url: str
) -> None:
    server = Gunicorn(
        tmp_path, workers=2, DATABASE_URL=pg_migrated_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_SERVICE_NAME="heroes-test",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )  # fmt: skip
    server.start()
    try:
        trace_id, parent, header = traceparent()
        created = httpx.post(
            f"{server.url}/heroes/",
            json={"name": f"traced-{trace_id[:8]}", "secret_name": "s"},
            headers={"traceparent": header},
        )
        assert created.status_code == 200
        spans = collector.wait(trace_id, 2)
        quiet_id, _, quiet_header = traceparent()
        assert httpx.get(f"{server.url}/health/ready", headers={"traceparent": quiet_header})
        time.sleep(0.5)  # > OTEL_BSP_SCHEDULE_DELAY: anything exported would be here by now
    finally:
        assert server.stop() == 0
    # One span for the request, a child of the proxy's (the traceparent's) span...
    (request,) = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_SERVER]
    assert request.parent_id == parent
    assert request.name == "POST /heroes/"
    assert request.attributes["http.route"] == "/heroes/"
    assert request.service == "heroes-test"
    # ... and the INSERT's inside it, in time too.
    statements = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_CLIENT]
    assert statements, spans
    # (FastAPI's own spans, for the route and its dependencies, may sit in between.)
    assert all(request.span_id in ancestors(s, spans) for s in statements), spans
    assert all(request.start <= s.start <= s.end <= request.end for s in statements)
    assert any(s.attributes.get("db.system") == "postgresql" for s in statements)
    assert any("INSERT" in str(s.attributes.get("db.statement", "")) for s in statements)
    # The request's access line carries the same trace id.
    (line,) = [
        e for e in server.log_lines()
        if e.get("logger") == "heroes.access" and e.get("path") == "/heroes/"
    ]  # fmt: skip
    assert line["trace_id"] == trace_id
    assert line["span_id"] in {s.span_id for s in spans}
    # Probes make no trace, not even their statement's.
    assert collector.of(quiet_id) == []


def test_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    assert tracing.wrap(app) is app  # the very same object: nothing on the request path
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.enabled()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.enabled()
    assert tracing.wrap(app) is app
