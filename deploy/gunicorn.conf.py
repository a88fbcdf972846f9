"""gunicorn settings for heroes: `gunicorn -c deploy/gunicorn.conf.py` is the production server.

Every setting comes from the environment with a safe default (docs/operations.md, "Server
settings"). The app is NOT preloaded: each worker imports the app factory after fork, so each
opens its own database connection pool (docs/operations.md, "Connection budget").
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from heroes.config import settings_or_exit
from heroes.logs import logging_config
from heroes.worker import (
    BOOT_FAILURE_WINDOW,
    BOOT_FAILURES,
    DEFAULT_WORKERS,
    LIFESPAN_SHUTDOWN_MARGIN,
    CrashLoopBreaker,
    drain_seconds,
    trusted_proxies,
)


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default  # set-but-empty (compose `VAR: ${VAR:-}`) means "use the default"


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"gunicorn.conf.py: {name} must be >= {minimum}, got {value}")
    return value


# Refuse a bad configuration (e.g. production without real secrets) in the master, with one
# line and exit status 2, instead of a traceback from every worker that boots. Uncached: each
# worker reads its settings (and secret files, e.g. rotated API tokens) itself after fork.
_settings = settings_or_exit(cached=False)

# --- application ---------------------------------------------------------------------------
wsgi_app = "heroes.main:create_app()"  # the factory: settings from the environment
worker_class = "heroes.worker.HeroesWorker"  # uvicorn_worker.UvicornWorker + drain on SIGTERM
preload_app = False  # never: a preloaded app would share one pool (and its sockets) across forks
proc_name = "heroes"

# --- socket ----------------------------------------------------------------------------------
port = _env_int("PORT", 8000, minimum=1)
bind = _env("BIND", f"0.0.0.0:{port}").replace(",", " ").split()
backlog = _env_int("GUNICORN_BACKLOG", 2048, minimum=1)
# Proxy headers (X-Forwarded-For/-Proto) are trusted only from these addresses or networks ("*" =
# any: only when nothing but the proxy can reach the port), plus the addresses of the host names
# in FORWARDED_ALLOW_HOSTS (docker-compose.yml: "proxy"), resolved once per start or SIGHUP
# reload. uvicorn_worker passes the list on to uvicorn.
forwarded_allow_ips = trusted_proxies(
    _env("FORWARDED_ALLOW_IPS", "127.0.0.1"), _env("FORWARDED_ALLOW_HOSTS", "")
)

# --- workers ---------------------------------------------------------------------------------
# WEB_CONCURRENCY (compose sets it, and the proxy's requests at once per replica from the same
# variable; Kubernetes from the CPU limit), else 2.
workers = _env_int("WEB_CONCURRENCY", DEFAULT_WORKERS, minimum=1)
# Crash-loop breaker (heroes.worker.CrashLoopBreaker): this many workers dead before they booted
# within this many seconds stop the server (exit 3), whatever killed them.
boot_failures = _env_int("GUNICORN_BOOT_FAILURES", BOOT_FAILURES, minimum=1)
boot_failure_window = _env_int("GUNICORN_BOOT_FAILURE_WINDOW", BOOT_FAILURE_WINDOW, minimum=1)
# Worker heartbeat: a worker whose event loop is blocked this long is killed and replaced.
timeout = _env_int("GUNICORN_TIMEOUT", 30, minimum=0)
keepalive = _env_int("KEEPALIVE", 5, minimum=0)  # uvicorn's timeout_keep_alive

# --- graceful shutdown -----------------------------------------------------------------------
# SIGTERM -> drain (SHUTDOWN_DRAIN_SECONDS: still serving, readiness 503, Connection: close)
#         -> stop accepting, in-flight requests get GRACEFUL_TIMEOUT seconds (uvicorn's
#            timeout_graceful_shutdown, set by heroes.worker from the value below)
#         -> lifespan shutdown (LIFESPAN_SHUTDOWN_MARGIN s) -> exit.
# gunicorn's graceful_timeout is the master's SIGKILL deadline, so it is the sum of the three;
# the orchestrator's grace period (compose stop_grace_period, k8s terminationGracePeriodSeconds)
# must be longer still.
shutdown_drain_seconds = drain_seconds()
graceful_inflight = _env_int("GRACEFUL_TIMEOUT", 20, minimum=1)
graceful_timeout = graceful_inflight + math.ceil(shutdown_drain_seconds) + LIFESPAN_SHUTDOWN_MARGIN
# max_requests stays 0 (off): with UvicornWorker the recycle drops in-flight connections
# (https://github.com/benoitc/gunicorn/issues/2567).
max_requests = 0

# --- read-only root filesystem ---------------------------------------------------------------
# Heartbeat files on tmpfs (also avoids fchmod blocking on a disk-backed /tmp); no pid file; no
# control socket (gunicorn >= 25.1 would create $HOME/.gunicorn/gunicorn.ctl).
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
pidfile = None
control_socket_disable = True

# --- logging ---------------------------------------------------------------------------------
# One log format for the master, the workers (uvicorn) and the app (heroes.logs): LOG_LEVEL and
# LOG_FORMAT as the app's Settings read them (same defaults: JSON lines, readable text on a
# terminal). The access line is written by heroes.edge, inside the request, so it carries the
# request id:
# gunicorn's and uvicorn's own access logs stay off (accesslog None; logging_config gives their
# loggers no handler).
# GUNICORN_ACCESS_LOG=off turns those access lines off (errors and the rest stay).
loglevel = _settings.log_level
errorlog = "-"
accesslog = None
_access = _env("GUNICORN_ACCESS_LOG", "on").lower() not in {"off", "none", "false", "0"}
logconfig_dict = logging_config(loglevel, _settings.log_format, access_log=_access)


# --- hooks -----------------------------------------------------------------------------------
#: Names the multiprocess directory this master created itself (PROMETHEUS_MULTIPROC_DIR unset),
#: in the environment rather than in this module: a reload (SIGHUP) re-reads this file.
PRIVATE_METRICS_DIR = "HEROES_PRIVATE_METRICS_DIR"


def on_starting(server: Any) -> None:
    """Master, before forking: start every run with an empty prometheus multiprocess directory.

    Without PROMETHEUS_MULTIPROC_DIR (the image sets it; `gunicorn -c` from a checkout does not)
    each worker would count in its own memory and a scrape would show one worker's share: the
    master makes a private directory, inherited by every worker, and removes it on exit."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs when there is one
        directory = tempfile.mkdtemp(prefix="heroes-metrics-", dir=base)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[PRIVATE_METRICS_DIR] = directory
        server.log.info("heroes: prometheus multiprocess directory %s (private)", directory)
    path = Path(directory)
    if path.is_dir():  # empty it in place: it may be a mount point
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    else:
        path.mkdir(parents=True, exist_ok=True)
    # On the arbiter, which outlives a reload (SIGHUP re-reads this file, not the master).
    server.heroes_breaker = breaker = CrashLoopBreaker(boot_failures, boot_failure_window)
    server.log.error_log.addFilter(breaker)


def pre_fork(server: Any, worker: Any) -> None:
    """Master: the worker gets the breaker's pipe to report its boot on."""
    worker.heroes_breaker = server.heroes_breaker


def post_worker_init(worker: Any) -> None:
    """Worker, its app loaded: booted (a death from now on is not a crash loop)."""
    worker.heroes_breaker.booted(os.getpid())


def on_exit(server: Any) -> None:
    """Master, last thing: remove the private multiprocess directory (a configured one stays)."""
    private = os.environ.get(PRIVATE_METRICS_DIR)
    if private and private == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(private, ignore_errors=True)


def when_ready(server: Any) -> None:
    server.log.info(
        "heroes: %d workers, timeout %ss, keep-alive %ss, drain %ss + in-flight %ss "
        "(graceful_timeout %ss), forwarded-allow-ips %s",
        workers,
        timeout,
        keepalive,
        shutdown_drain_seconds,
        graceful_inflight,
        graceful_timeout,
        forwarded_allow_ips,
    )


def _forget_gauges(pid: int) -> None:
    """Drop a dead worker's live gauges from the multiprocess directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def child_exit(server: Any, worker: Any) -> None:
    """Master, after reaping a worker: its gauges go; a crash loop stops the server, with one
    line (gunicorn's "Reason: ...") naming it and the last worker's end. Not while stopping:
    then workers end because they were told to (the master has closed its listeners)."""
    _forget_gauges(worker.pid)
    if server.LISTENERS and (reason := server.heroes_breaker.exited(worker.pid, time.monotonic())):
        raise HaltServer(reason, Arbiter.WORKER_BOOT_ERROR)


def worker_exit(server: Any, worker: Any) -> None:
    """Worker, on its way out (after its last request): drop its own live gauges too, so they
    go even when the master cannot reap it in time (e.g. a SIGKILL at the graceful deadline)."""
    _forget_gauges(worker.pid)
