"""A gunicorn server as a child process, and heroes' production server among them
(``gunicorn -c deploy/gunicorn.conf.py``): started, waited for until it answers, stopped by pid.

The tests run the production server on SQLite, the browser check with API tokens, the benchmark
on its PostgreSQL (and the tutorial and the ceiling apps with their own argv): the same class.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

from harness.procs import ProcessRegistry, children, free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONFIG = REPO / "deploy" / "gunicorn.conf.py"
#: Variables the service reads, dropped from the inherited environment so the caller decides.
SERVICE_VARS = (
    "DATABASE_", "DB_", "API_TOKENS", "AUTH_", "LOG_", "GUNICORN_", "PROMETHEUS_", "DOCS_",
)  # fmt: skip


class GunicornServer:
    """``argv`` run in ``cwd`` with exactly ``env``; stdout (and stderr, unless ``stderr`` names
    a file of its own) into ``logfile``. ``registry`` lists the master's pid under ``key``."""

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        *,
        cwd: Path,
        port: int,
        logfile: Path,
        stderr: Path | None = None,
        workers: int = 1,
        key: str = "gunicorn",
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.argv = argv
        self.env = dict(env)
        self.cwd = cwd
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.logfile = logfile
        self.stderr = stderr
        self.expected_workers = workers
        self.key = key
        self.registry = registry
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 60) -> None:
        """Start, then wait until every worker has forked and ``ready()`` (default: the
        production server's /health/ready answers 200)."""
        check = ready or self.is_ready
        with self.logfile.open("ab") as out, (self.stderr or self.logfile).open("ab") as err:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        if self.registry is not None:
            self.registry.add(self.key, self.process.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{self.key}: gunicorn exited {self.process.returncode}\n{self.log_tail()}"
                )
            if len(self.workers()) >= self.expected_workers and check():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.key}: not ready after {timeout:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def is_ready(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/health/ready", timeout=2, trust_env=False)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def workers(self) -> list[int]:
        return children(self.process.pid) if self.process is not None else []

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the master (by pid) and wait; SIGKILL to it and its workers after
        ``timeout``. The master's exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            workers = self.workers()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                for pid in workers:  # the killed master's workers are ours too
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self.registry is not None:
            self.registry.remove(self.key)
        return self.process.returncode

    def output(self) -> str:
        text = self.logfile.read_text(errors="replace")
        if self.stderr is not None:
            text += self.stderr.read_text(errors="replace")
        return text

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.output().splitlines()[-lines:])
        except OSError:
            return ""


def production_argv(app: str | None = None) -> list[str]:
    """The production server's command line (``app``: another factory than heroes.main's)."""
    return [str(BIN / "gunicorn"), "-c", str(CONFIG), *([app] if app else [])]


def production_env(
    port: int,
    workers: int,
    settings: Mapping[str, str],
    *,
    inherit: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the production server on 127.0.0.1:``port``: ``inherit`` (default:
    the caller's environment) without any of the service's own variables, plus ``settings``."""
    base = os.environ if inherit is None else inherit
    inherited = {k: v for k, v in base.items() if not k.startswith(SERVICE_VARS)}
    return inherited | {
        "ENVIRONMENT": "development",
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "SHUTDOWN_DRAIN_SECONDS": "0",
        **settings,
    }


def production(
    workdir: Path,
    *,
    workers: int = 2,
    app: str | None = None,
    port: int | None = None,
    stderr: Path | None = None,
    key: str = "heroes",
    registry: ProcessRegistry | None = None,
    **settings: str,
) -> GunicornServer:
    """``gunicorn -c deploy/gunicorn.conf.py [app]`` in ``workdir`` with ``settings`` (the
    service's variables: DATABASE_URL, LOG_LEVEL...); not started."""
    port = port or free_port()
    return GunicornServer(
        production_argv(app),
        production_env(port, workers, settings),
        cwd=workdir,
        port=port,
        logfile=workdir / f"{key}.log",
        stderr=stderr,
        workers=workers,
        key=key,
        registry=registry,
    )


def migrate(server: GunicornServer) -> list[dict[str, Any]]:
    """``heroes migrate`` with the server's environment; its log lines (JSON objects)."""
    done = subprocess.run(
        [str(BIN / "heroes"), "migrate"], env=server.env, cwd=server.cwd, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()]
