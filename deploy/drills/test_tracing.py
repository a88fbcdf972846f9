"""Drill 26: traces through the proxy.

The api replicas are recreated with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at an OTLP/HTTP
receiver on the compose network (drills/otlp_sink.py, decoding with opentelemetry-proto). One
POST goes through HAProxy's published port with a W3C ``traceparent``. Pass: the receiver gets
the request's span with that trace id as a child of the traceparent's span, the INSERT's span as
its child and inside it in time, and the replica's JSON access line of that request carries the
same trace id and the request span's id. The replicas are recreated without tracing afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.client import Outcome, request_once
from drills.common import Context, DrillResult, wait_for
from drills.stack import log

TITLE = (
    "Traces through the proxy: traceparent honoured, statement span inside the request's, "
    "trace id in the access line"
)
SINK = Path(__file__).with_name("otlp_sink.py")
SERVER, CLIENT = 2, 3  # OTLP SpanKind


def _override(image: str) -> Path:
    config: dict[str, Any] = {
        "services": {
            "api": {"environment": {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otlp-sink:4318",
                "OTEL_SERVICE_NAME": "heroes-drill",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            }},
            "otlp-sink": {
                "image": image,
                "command": ["python", "-u", "/opt/drills/otlp_sink.py"],
                "volumes": [f"{SINK}:/opt/drills/otlp_sink.py:ro"],
                "read_only": True,
                "healthcheck": {
                    "test": ["CMD", "python", "-c",
                             "import socket; socket.create_connection(('127.0.0.1', 4318), 2)"],
                    "interval": "1s", "timeout": "3s", "retries": 30,
                },
            },
        }
    }  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="heroes-drills-otel-")) / "compose.tracing.yml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


@pytest.mark.drill(26, TITLE, stage="monitoring", services=("api", "otlp-sink"))
def test_tracing(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    traced = dataclasses.replace(stack, files=(*stack.files, str(_override(stack.image))))
    log("drill 26: api replicas recreated with OTEL_EXPORTER_OTLP_ENDPOINT=http://otlp-sink:4318")
    try:
        traced.compose("up", "-d", "--wait", "--wait-timeout", "180", "--no-deps",
                       "otlp-sink", "api", timeout=300)  # fmt: skip
        stack.wait_ready(ctx.api_url, timeout=60)
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        t0 = time.time()
        answer = request_once(
            ctx.api_url, "POST", "/heroes/",
            body={"name": f"d26-{ctx.run_id}", "secret_name": "traced"},
            headers={"traceparent": f"00-{trace_id}-{parent}-01",
                     "Authorization": f"Bearer {stack.tokens()[0]}"},
        )  # fmt: skip
        result.expect(answer.outcome is Outcome.OK, f"POST through the proxy: {answer.status}")

        def spans() -> list[dict[str, Any]]:
            return [e for e in traced.log_events("otlp-sink", t0) if e.get("trace") == trace_id]

        arrived = wait_for(lambda: len(spans()) >= 2, timeout=20, interval=0.2)
        got = spans()
        access = [
            e for c in stack.containers("api") for e in stack.log_events("api", t0, container=c)
            if e.get("logger") == "heroes.access" and e.get("path") == "/heroes/"
            and e.get("method") == "POST" and e.get("trace_id") == trace_id
        ]  # fmt: skip
    finally:
        log("drill 26: api replicas recreated without tracing")
        stack.compose("up", "-d", "--wait", "--wait-timeout", "180", "--no-deps", "api",
                      timeout=300)  # fmt: skip
        traced.compose("rm", "-s", "-f", "otlp-sink", check=False)
        stack.wait_ready(ctx.api_url, timeout=60)
    requests = [s for s in got if s["kind"] == SERVER]
    statements = [s for s in got if s["kind"] == CLIENT]
    request = requests[0] if len(requests) == 1 else None
    result.expect(request is not None, f"one request span expected, got {json.dumps(got)[:800]}")
    if request is not None:
        result.expect(request["parent"] == parent, f"request span's parent {request['parent']}")
        result.expect(request["name"] == "POST /heroes/", f"request span named {request['name']}")
        result.expect(
            bool(statements) and all(
                s["parent"] == request["span"] and request["start"] <= s["start"] <= s["end"]
                <= request["end"] for s in statements
            ),
            f"statement spans not inside the request's: {statements}",
        )  # fmt: skip
        result.expect(
            len(access) == 1 and access[0].get("span_id") == request["span"],
            f"access line with the trace id: {access}",
        )
    result.figures.update(
        spans=len(got), statement_spans=[s["name"] for s in statements],
        spans_arrived_s=None if arrived is None else round(arrived, 2),
        access_lines_with_trace_id=len(access),
    )  # fmt: skip
    result.summary = (
        f"POST /heroes/ through HAProxy with a traceparent: {len(got)} spans of its trace at the "
        f"OTLP receiver {'never' if arrived is None else f'{arrived:.1f} s'} later (request span "
        f"'{request['name'] if request else '?'}' a child of the traceparent's, statement spans "
        f"{[s['name'] for s in statements]} inside it), access line with the same trace id: "
        f"{len(access)}"
    )
