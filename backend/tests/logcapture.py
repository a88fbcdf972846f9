"""Capture what the production handler would print: JSON lines through heroes.logs' formatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from heroes.logs import JsonFormatter, RequestIdFilter


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def raw(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def lines(self, logger: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.raw()]
        return [line for line in parsed if logger is None or line["logger"] == logger]


@contextmanager
def capture_logs(level: int = logging.INFO) -> Iterator[Captured]:
    """Every record reaching the root logger, as the JSON lines the stdout handler would write."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
