"""Opt-in OpenTelemetry traces: one span per request, one per SQL statement, W3C trace context.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and
then free: nothing of OpenTelemetry is imported and the application is not wrapped. On, every
other ``OTEL_*`` variable of the specification applies as the SDK reads it (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_BSP_*``, ``OTEL_PROPAGATORS``, ``OTEL_SDK_DISABLED``...); spans go out over OTLP/HTTP
(protobuf) in batches from a background thread.

The SDK is set up in the process that serves, never before gunicorn forks (a batch processor's
thread and an exporter's connections do not survive a fork): :func:`setup` runs in the app's
lifespan, in each worker, before its database pool opens. The request's span is FastAPI's own
(``FastAPI(telemetry=...)``, :data:`TELEMETRY`: it wraps the whole middleware stack, the edge
layer included, so the access line is logged inside it; it takes the W3C ``traceparent`` from the
request and names the span after the route template); the statements' spans come from
opentelemetry-instrumentation-psycopg (psycopg's connect is patched, so every connection the pool
opens afterwards makes a span per execute). Log lines written inside a span carry its
``trace_id`` and ``span_id`` (:class:`TraceIdFilter`, on the root logger's handlers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp, Receive, Scope, Send

SERVICE_NAME = "heroes"
#: Probes and scrapes make no trace: HAProxy's readiness checks alone would be two traces a
#: second per replica, each with its statement.
QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})

_configured_pid: int | None = None


def enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


class TraceIdFilter(logging.Filter):
    """Stamps ``record.trace_id`` / ``record.span_id`` (hex) from the current span, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def setup() -> None:
    """Set the SDK up for this process when tracing is on (once; again in a forked child)."""
    global _configured_pid
    if _configured_pid == os.getpid() or not enabled():
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from heroes import __version__

    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": __version__})
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over the defaults above.
    resource = resource.merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Flushed and shut down at exit (the provider registers it): a worker that stops sends
    # what it still holds.
    trace.set_tracer_provider(provider)
    instrumentor = PsycopgInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, TraceIdFilter) for f in handler.filters):
            handler.addFilter(TraceIdFilter())
    _configured_pid = os.getpid()


def _quiet(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in QUIET_PATHS


#: ``FastAPI(telemetry=...)``: one span per request, none per dependency, endpoint call or
#: serialization (they would double tracing's cost, docs/observability.md; the statement spans
#: say where the time goes); metrics are Prometheus's, logs are ours. Nothing at all while no
#: tracer provider is set (tracing off).
TELEMETRY: TelemetryConfig = {
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "exclude": _quiet,
}


def wrap(app: ASGIApp) -> ASGIApp:
    """The application itself when tracing is off; on, probes and scrapes (which FastAPI's
    telemetry skips, :data:`TELEMETRY`) make no statement spans either."""
    if not enabled():
        return app
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    async def statements_traced_unless_quiet(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in QUIET_PATHS:
            with suppress_instrumentation():
                await app(scope, receive, send)
        else:
            await app(scope, receive, send)

    return statements_traced_unless_quiet
