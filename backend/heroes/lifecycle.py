"""Process-wide shutdown state: set by the worker on SIGTERM, read by readiness and responses."""

from __future__ import annotations

import threading

_draining = threading.Event()
CLOSE = (b"connection", b"close")


def begin_draining() -> None:
    _draining.set()


def is_draining() -> bool:
    return _draining.is_set()


def reset_draining() -> None:
    _draining.clear()


def closing(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Response headers while draining: ``Connection: close``, so keep-alive clients reconnect
    elsewhere after a complete response instead of having an idle connection reset under them."""
    return [(k, v) for k, v in headers if k.lower() != b"connection"] + [CLOSE]
