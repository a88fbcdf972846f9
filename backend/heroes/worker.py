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
docs/load-balancing.md; the socket-level tricks an earlier version used for clients connected
straight to the replica changed none of those figures and are gone).

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
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from heroes import lifecycle

__all__ = [
    "LIFESPAN_SHUTDOWN_MARGIN",
    "HeroesServer",
    "HeroesWorker",
    "cgroup_cpu_limit",
    "default_workers",
    "drain_seconds",
    "effective_cpu_count",
    "inflight_timeout",
    "trusted_proxies",
]

logger = logging.getLogger("uvicorn.error")

#: Seconds of gunicorn's graceful_timeout kept for closing the listener, the lifespan shutdown
#: (pool close) and the exit.
LIFESPAN_SHUTDOWN_MARGIN = 2
#: Default for SHUTDOWN_DRAIN_SECONDS.
DEFAULT_DRAIN_SECONDS = 3.0
#: Ceiling for the CPU-derived worker count (WEB_CONCURRENCY overrides it): every worker holds its
#: own pool of DB_POOL_SIZE + DB_MAX_OVERFLOW connections, and an unlimited container on a large
#: host must not exhaust PostgreSQL's max_connections.
MAX_AUTO_WORKERS = 8

_CGROUP_ROOT = Path("/sys/fs/cgroup")


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


# --- CPU sizing -------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ratio(quota: str | None, period: str | None) -> float | None:
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:  # "max" (v2 unlimited), missing or garbled file
        return None
    return q / p if q > 0 and p > 0 else None  # v1 writes -1 for unlimited


def _quota_v2(directory: Path) -> float | None:
    quota, _, period = (_read(directory / "cpu.max") or "").partition(" ")  # "150000 100000"
    return _ratio(quota, period)


def _quota_v1(directory: Path) -> float | None:
    return _ratio(_read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us"))


def _cgroup_dirs(
    proc_cgroup: str, mountinfo: str, cgroup_root: Path = _CGROUP_ROOT
) -> list[tuple[Path, bool]]:
    """The cgroup directories that limit this process' CPU, innermost first: (path, is_v2).

    The process' cgroup path (/proc/self/cgroup) is translated through the cgroup mount that holds
    it (/proc/self/mountinfo: the mount's root inside the hierarchy), so it works on the host, in a
    container with a cgroup namespace (v2) and in one that only bind-mounts its own subtree (v1).
    Every ancestor up to the mount point is included: the tightest quota wins.
    """
    paths_v1: dict[str, str] = {}
    path_v2: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            path_v2 = path
        for controller in controllers.split(","):
            paths_v1[controller] = path

    found: list[tuple[Path, bool]] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_root, mount_point = fields[3], Path(fields[4])
        fstype, super_options = tail[0], tail[2].split(",")
        if fstype == "cgroup2" and path_v2 is not None:
            cg_path, is_v2 = path_v2, True
        elif fstype == "cgroup" and "cpu" in super_options and "cpu" in paths_v1:
            cg_path, is_v2 = paths_v1["cpu"], False
        else:
            continue
        relative = os.path.relpath(cg_path, mount_root) if cg_path.startswith(mount_root) else "."
        directory = (mount_point / relative) if relative != "." else mount_point
        # Inside a v1 container /proc/self/cgroup names the host path (/docker/<id>) while the
        # mount shows only the container's subtree at its root: fall back to the mount point.
        if not directory.is_dir():
            directory = mount_point
        while True:
            found.append((directory, is_v2))
            if directory == mount_point or directory.parent == directory:
                break
            directory = directory.parent
    if not found and cgroup_root.is_dir():  # no /proc (unusual sandbox): try the usual mounts
        found = [
            (cgroup_root, True),
            (cgroup_root / "cpu", False),
            (cgroup_root / "cpu,cpuacct", False),
        ]
    return found


def cgroup_cpu_limit() -> float | None:
    """CPUs allowed by the cgroup CPU quota (v1 cfs_quota_us or v2 cpu.max); None if unlimited."""
    proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    mountinfo = _read(Path("/proc/self/mountinfo")) or ""
    limits = [
        quota
        for directory, is_v2 in _cgroup_dirs(proc_cgroup, mountinfo)
        if (quota := (_quota_v2(directory) if is_v2 else _quota_v1(directory))) is not None
    ]
    return min(limits) if limits else None


def effective_cpu_count() -> int:
    """CPUs this process may really use: cpuset affinity, then the CFS quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def default_workers(cpus: int | None = None) -> int:
    """Workers when WEB_CONCURRENCY is not set: one event loop per usable CPU, at least 2 (a stuck
    or restarting worker does not take the replica down), at most MAX_AUTO_WORKERS."""
    cpus = effective_cpu_count() if cpus is None else cpus
    return min(MAX_AUTO_WORKERS, max(2, cpus))


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
