"""Request ids, access lines and request metrics (applied to every request by the edge layer)."""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Mapping
from secrets import token_hex
from typing import Any

from starlette.types import Scope

from heroes.logs import ACCESS_LOGGER
from heroes.server import metrics

#: A client's X-Request-ID is kept when it matches this (no spaces, no CR/LF, bounded length).
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9_.:-]{1,128}")
#: Probes and scrapes get no access line unless they fail (they still count in the metrics).
QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
#: Status recorded for a request that ended without a response (client gone, task cancelled).
NO_RESPONSE = 499
USER_AGENT_MAX = 256
#: A proxy's X-Request-Start older than this is not a queue (a client's own header, a clock step).
QUEUE_STAMP_MAX_S = 60.0

access_logger = logging.getLogger(ACCESS_LOGGER)


class _Ids:
    """Generated ids: 16 random hex digits per process, then a 16-digit counter. Unique without a
    call to the kernel's random source per request; ids correlate log lines, they guard nothing."""

    prefix: str | None = None
    counter = itertools.count()

    @classmethod
    def reset(cls) -> None:
        cls.prefix, cls.counter = None, itertools.count()


# A forked worker must not repeat its parent's ids.
os.register_at_fork(after_in_child=_Ids.reset)


def new_request_id() -> str:
    """32 hex digits, unique across processes and restarts."""
    if _Ids.prefix is None:
        _Ids.prefix = token_hex(8)
    return f"{_Ids.prefix}{next(_Ids.counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def request_id_from(value: bytes | None) -> str:
    """The client's id when it is sane, else a new one."""
    if value is not None and SANE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    return new_request_id()


def queued_since(header: bytes, now: float) -> float:
    """Seconds since the proxy stamped ``X-Request-Start: t=<microseconds since the epoch>``
    (deploy/haproxy/haproxy.cfg): the time the request waited in its queue; 0 for anything else."""
    digits = header.removeprefix(b"t=")
    if not digits.isdigit() or len(digits) > 20:
        return 0.0
    waited = now - int(digits) / 1e6
    return waited if 0.0 < waited < QUEUE_STAMP_MAX_S else 0.0


def finished(
    scope: Scope,
    status: int,
    seconds: float,
    queued: float,
    user_agent: bytes,
    route_paths: Mapping[Any, str],
) -> None:
    """Count the request by route template and write its access line. The histogram gets the
    time since the proxy had the request (``queued`` + ``seconds``): what the SLO promises.

    ``route_paths`` maps the endpoints of plain Starlette routes (/docs, /openapi.json) to their
    paths: only FastAPI's own routes leave ``scope["route"]`` behind.
    """
    route = scope.get("route")
    if route is not None:
        template = getattr(route, "path", None) or metrics.UNMATCHED
    else:
        template = route_paths.get(scope.get("endpoint"), metrics.UNMATCHED)
    method: str = scope["method"]
    metrics.observe(method, template, status, queued + seconds)
    path: str = scope["path"]
    if not access_logger.isEnabledFor(logging.INFO):
        return
    if status < 400 and path in QUIET_PATHS:
        return
    client = scope.get("client")
    fields = {
        "method": method,
        "path": path,
        "route": template,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "queued_ms": round(queued * 1000, 3),
        "client": client[0] if client else None,
        "user_agent": user_agent[:USER_AGENT_MAX].decode("latin-1"),
    }
    if scope.get("query_string"):
        fields["query"] = scope["query_string"].decode("latin-1")
    access_logger.info("%s %s %d", method, path, status, extra={"fields": fields})
