"""One log format for gunicorn, uvicorn and the application: a JSON object per line on stdout
(readable text instead when a person watches: ``LOG_FORMAT=auto`` on a terminal, or ``plain``).

Every record logged while a request is being served carries that request's id: the outermost
ASGI layer, :mod:`heroes.server.edge`, sets :data:`request_id_var`, :class:`RequestIdFilter` (on the
handler) copies it onto the record. ``logging_config`` is the one ``dictConfig`` for gunicorn's
``logconfig_dict``, ``heroes serve`` (uvicorn's ``log_config``) and the CLI.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

__all__ = [
    "ACCESS_LOGGER",
    "JsonFormatter",
    "PlainFormatter",
    "RequestIdFilter",
    "configure_if_unconfigured",
    "known_level",
    "logging_config",
    "request_id_var",
    "resolve_format",
]

#: The id of the request being served in this context (None outside a request).
request_id_var: ContextVar[str | None] = ContextVar("heroes_request_id", default=None)

#: Logger of the access lines heroes.server.edge writes (uvicorn's and gunicorn's own are off).
ACCESS_LOGGER = "heroes.access"

LEVELS = ("critical", "error", "warning", "info", "debug")
FORMATS = ("json", "plain", "auto")


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` from the request context (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "pid", "request_id"?, <fields>..., "exc"?}``.

    Extra structured fields go in ``extra={"fields": {...}}`` and become top-level keys.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once per second, not once per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            payload["request_id"] = request_id
        trace_id = getattr(record, "trace_id", None)  # heroes.server.tracing, when traces are on
        if trace_id is not None:
            payload["trace_id"] = trace_id
            payload["span_id"] = getattr(record, "span_id", None)
        fields = getattr(record, "fields", None)
        if fields:
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(payload, default=str).decode()
        except TypeError:  # e.g. a lone surrogate in a message: orjson refuses, json escapes it
            return json.dumps(payload, default=str, ensure_ascii=True, separators=(",", ":"))


class PlainFormatter(logging.Formatter):
    """Readable lines for local development: ``time LEVEL logger [request id] message k=v...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += "".join(f" {key}={value}" for key, value in fields.items())
        return line


def logging_config(
    level: str = "info", fmt: str = "json", *, access_log: bool = True
) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of every heroes process.

    Everything goes to one stdout handler. gunicorn's loggers get it explicitly (gunicorn turns
    their propagation off; uvicorn_worker copies gunicorn.error's handlers to uvicorn.error).
    uvicorn's and gunicorn's access loggers get no handler: the access line is written by
    heroes.server.edge on ``heroes.access``, inside the request context, so it carries the
    request id.
    ``access_log=False`` silences those lines.
    """
    level = known_level(level)
    fmt = str(fmt).strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, got {fmt!r}")
    fmt = resolve_format(fmt)
    upper = level.upper()
    formatter = JsonFormatter if fmt == "json" else PlainFormatter
    silent: dict[str, Any] = {"handlers": [], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"heroes": {"()": formatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "heroes",
                "filters": ["request_id"],
            }
        },
        "root": {"level": upper, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": upper, "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", **silent},
            "uvicorn": {"level": upper, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": upper, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", **silent},
            # Lines are INFO: under LOG_LEVEL=warning (or access_log=False) they cost one check.
            ACCESS_LOGGER: {"level": upper if access_log else "WARNING", "propagate": True},
            # psycopg_pool logs every checkout and return at INFO; its warnings (a failed
            # connect, a connection lost) still come through.
            "psycopg.pool": {"level": "WARNING"},
            # alembic >= 1.17 announces each of its plugins at INFO when a worker imports it.
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def known_level(level: str) -> str:
    """LOG_LEVEL, normalised (the one check: Settings and logging_config both use it)."""
    normalised = str(level).strip().lower()
    if normalised not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, got {normalised!r}")
    return normalised


def resolve_format(fmt: str) -> str:
    """``auto``: ``plain`` when stdout (where every line goes) is a terminal, else ``json``: a
    person running ``heroes serve`` reads text, a container's or a pipe's reader gets JSON."""
    if fmt != "auto":
        return fmt
    isatty = getattr(sys.stdout, "isatty", None)
    return "plain" if callable(isatty) and isatty() else "json"


def configure_if_unconfigured(level: str, fmt: str) -> None:
    """Apply :func:`logging_config` unless the root logger already has handlers (like
    ``logging.basicConfig``): a CLI command gets JSON lines, a test run keeps its capture."""
    if not logging.getLogger().handlers:
        logging.config.dictConfig(logging_config(level, fmt))
