"""gunicorn worker and runtime sizing for the production server (used by deploy/gunicorn.conf.py).

Shutdown timeline of one worker after gunicorn forwards SIGTERM (docker stop, rolling update):

1. drain (``SHUTDOWN_DRAIN_SECONDS``): the worker keeps accepting and serving, but
   ``heroes.lifecycle.begin_draining()`` turns readiness to 503 and adds ``Connection: close`` to
   every response, so load balancers stop routing here and keep-alive clients reconnect elsewhere
   instead of being reset when the socket closes;
2. uvicorn's own shutdown: stop accepting, close idle connections, let in-flight requests finish
   (``timeout_graceful_shutdown``);
3. lifespan shutdown (database pool closed), exit 0.

By the end of the drain no client connects here any more: the proxy (deploy/haproxy) takes a
draining replica out of rotation within about a second (its readiness checks), Kubernetes removes
the pod from its Service's endpoints. So closing the listener resets nothing (drills 1, 8, 11 in
docs/load-balancing.md).

gunicorn's ``graceful_timeout`` is the hard deadline from SIGTERM to SIGKILL, so the worker fits
1-3 inside it: in-flight budget = graceful_timeout - drain - LIFESPAN_SHUTDOWN_MARGIN (the margin
covers the listener close and the lifespan shutdown). deploy/gunicorn.conf.py sets
graceful_timeout = GRACEFUL_TIMEOUT + SHUTDOWN_DRAIN_SECONDS + margin, so the in-flight budget is
GRACEFUL_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import struct
import sys
import time
from collections import deque
from contextlib import suppress
from types import FrameType
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from heroes import lifecycle

__all__ = [
    "BOOT_FAILURES",
    "BOOT_FAILURE_WINDOW",
    "DEFAULT_WORKERS",
    "LIFESPAN_SHUTDOWN_MARGIN",
    "CrashLoopBreaker",
    "HeroesServer",
    "HeroesWorker",
    "drain_seconds",
    "inflight_timeout",
    "trusted_proxies",
]

logger = logging.getLogger("uvicorn.error")

#: Seconds of gunicorn's graceful_timeout kept for closing the listener, the lifespan shutdown
#: (pool close) and the exit.
LIFESPAN_SHUTDOWN_MARGIN = 2
#: Default for SHUTDOWN_DRAIN_SECONDS.
DEFAULT_DRAIN_SECONDS = 3.0
#: Workers when WEB_CONCURRENCY is not set (compose and the Kubernetes manifests set it): two, so
#: a stuck or restarting worker does not take the replica down.
DEFAULT_WORKERS = 2
#: Defaults of GUNICORN_BOOT_FAILURES and GUNICORN_BOOT_FAILURE_WINDOW (CrashLoopBreaker). Two: a
#: release that cannot load kills every worker of the first generation at about the same time,
#: so the server stops right after the first death instead of one import time later (figures:
#: docs/reliability.md); gunicorn itself halts at the first worker that exits with status 3.
BOOT_FAILURES = 2
BOOT_FAILURE_WINDOW = 60


def drain_seconds(environ: dict[str, str] | None = None) -> float:
    """SHUTDOWN_DRAIN_SECONDS (default 3; 0 disables the drain phase)."""
    raw = (os.environ if environ is None else environ).get("SHUTDOWN_DRAIN_SECONDS", "").strip()
    if not raw:
        return DEFAULT_DRAIN_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"SHUTDOWN_DRAIN_SECONDS must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"SHUTDOWN_DRAIN_SECONDS must be >= 0, got {raw!r}")
    return value


def inflight_timeout(graceful_timeout: float, drain: float) -> int:
    """uvicorn's timeout_graceful_shutdown that fits drain + in-flight + lifespan in gunicorn's."""
    return max(1, math.floor(graceful_timeout - drain - LIFESPAN_SHUTDOWN_MARGIN))


def trusted_proxies(ips: str, hosts: str = "") -> str:
    """FORWARDED_ALLOW_IPS plus the addresses of the FORWARDED_ALLOW_HOSTS names, resolved now.

    gunicorn and uvicorn take only "*", IP addresses and networks (gunicorn even validates the
    FORWARDED_ALLOW_IPS variable itself at import), but a proxy on a Compose network is known by
    its service name, and its address changes when it is recreated. A name that does not resolve
    is left out with a warning: its headers are then not trusted, the safe side.
    """
    entries = [entry for entry in ips.replace(" ", ",").split(",") if entry]
    for host in hosts.replace(" ", ",").split(","):
        if not host:
            continue
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            print(
                f"heroes: FORWARDED_ALLOW_HOSTS: {host!r} does not resolve ({exc}); not trusted",
                file=sys.stderr,
            )
            continue
        entries += sorted({str(info[4][0]) for info in infos} - set(entries))
    return ",".join(entries)


# --- crash-loop breaker ----------------------------------------------------------------------


class CrashLoopBreaker(logging.Filter):
    """Stops the server when its workers keep dying before they ever booted.

    gunicorn halts by itself only when a worker exits with status 3 (an exception while loading
    the app, or a failed lifespan startup); a worker that ends the process some other way at
    import (``raise SystemExit(7)``, ``os._exit``, a crash in a C extension, an OOM kill) is
    respawned forever: the container is never healthy and never restarted. Each worker reports
    that it booted (its app loaded: gunicorn's ``post_worker_init``) by writing its pid to a pipe
    the master made before forking; when the master reaps a worker (``child_exit``) it reads the
    pipe. ``failures`` workers dead without having booted within ``window`` seconds: ``exited``
    returns the one line that says so, and the master stops with it (deploy/gunicorn.conf.py).
    A worker that booted and died later is replaced as before and never counted.

    It is also a logging filter on gunicorn's error logger, where the master writes how each
    worker ended ("Worker (pid:N) exited with code 7.", "... was sent SIGSEGV!") just before
    ``child_exit``, which is not told: the line names the last one.
    """

    _PID = struct.Struct("=i")

    def __init__(self, failures: int, window: float) -> None:
        super().__init__()
        self.failures = failures
        self.window = window
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._booted: set[int] = set()
        self._deaths: deque[float] = deque()
        self._how: dict[int, str] = {}

    def booted(self, pid: int) -> None:
        """In the worker, once its app is loaded. 4 bytes: atomic, and the pipe cannot fill (the
        master empties it whenever a worker exits, and only then are new workers forked)."""
        with suppress(BlockingIOError):
            os.write(self._write_fd, self._PID.pack(pid))

    def filter(self, record: logging.LogRecord) -> bool:
        """Keeps the master's line about each worker's end (never drops a record)."""
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("Worker (pid:%s) ")
            and record.args
        ):
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            self._how[int(args[0])] = record.getMessage().rstrip(".!")  # type: ignore[call-overload]
        return True

    def exited(self, pid: int, now: float) -> str | None:
        """In the master, after reaping worker ``pid``: why to stop the server, or None."""
        while True:
            try:
                data = os.read(self._read_fd, 4096)  # a multiple of the record size
            except BlockingIOError:
                break
            if not data:
                break
            self._booted.update(pid for (pid,) in self._PID.iter_unpack(data))
        how = self._how.pop(pid, f"Worker (pid:{pid}) exited")
        if pid in self._booted:
            self._booted.discard(pid)
            return None
        self._deaths.append(now)
        while self._deaths[0] <= now - self.window:
            self._deaths.popleft()
        if len(self._deaths) < self.failures:
            return None
        return (
            f"crash loop: {len(self._deaths)} workers died before they booted, within "
            f"{now - self._deaths[0]:.1f} s, the last: {how}; stopping the server (exit 3) for its "
            "supervisor to restart or roll back"
        )


# --- worker -----------------------------------------------------------------------------------


class HeroesServer(Server):
    """uvicorn Server whose SIGTERM first drains (see the module docstring), then shuts down."""

    def __init__(self, config: Config, drain: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_deadline: float | None = None
        self._drain_logged = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only set flags here (no logging, no loop calls). The signal
        # is deliberately not recorded in _captured_signals: uvicorn would re-raise it after
        # shutdown and the worker would die by SIGTERM instead of exiting 0 through gunicorn's
        # worker_exit hook.
        first_term = sig == signal.SIGTERM and self.drain_deadline is None
        if first_term and self.started and self.drain > 0:
            self.drain_deadline = time.monotonic() + self.drain
            lifecycle.begin_draining()
            return
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True  # a second SIGTERM ends the drain early

    def quick_exit(self) -> None:
        """SIGQUIT (gunicorn's quick shutdown on SIGINT/SIGQUIT): no drain, no waiting."""
        self.should_exit = True
        self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            if not self._drain_logged:
                self._drain_logged = True
                logger.info(
                    "SIGTERM: draining for %.1fs (readiness 503, Connection: close)", self.drain
                )
            if time.monotonic() >= self.drain_deadline:
                logger.info("Drain over: no longer accepting connections")
                self.should_exit = True
        return await super().on_tick(counter)


class HeroesWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn_worker ships no type hints
    """uvicorn_worker.UvicornWorker plus drain-then-graceful SIGTERM handling.

    - uvicorn's timeout_graceful_shutdown is derived from gunicorn's graceful_timeout (upstream's
      worker leaves it unset: in-flight requests would wait forever and be SIGKILLed);
    - SIGQUIT really stops the server (upstream only sets gunicorn's unused ``alive`` flag);
    - uvicorn's loggers do not share gunicorn's handler lists (logging survives a SIGHUP reload);
    - no ``Server`` header.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Upstream assigns gunicorn's handler *lists* to uvicorn's loggers (in the master, before
        # fork). Sharing one list means a later dictConfig (gunicorn re-applies logconfig_dict on
        # SIGHUP) that empties uvicorn.error's handlers empties gunicorn.error's too: after a
        # reload neither the master nor the new workers would log. Give each logger its own list.
        for name in ("uvicorn.error", "uvicorn.access"):
            uvicorn_logger = logging.getLogger(name)
            uvicorn_logger.handlers = list(uvicorn_logger.handlers)
        graceful = float(self.cfg.graceful_timeout)
        drain = drain_seconds()
        # Never let the drain eat the in-flight budget (misconfiguration): cap it.
        self.drain = max(0.0, min(drain, graceful - LIFESPAN_SHUTDOWN_MARGIN - 1))
        self.config.timeout_graceful_shutdown = inflight_timeout(graceful, self.drain)
        self.config.server_header = False

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = HeroesServer(config=self.config, drain=self.drain)
        asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, server.quick_exit)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
