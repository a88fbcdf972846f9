"""The production server for end-to-end tests: `gunicorn -c deploy/gunicorn.conf.py` on a free
loopback port, on an SQLite database migrated by `heroes migrate`, started and stopped by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONFIG = REPO / "deploy" / "gunicorn.conf.py"
#: Variables the service reads, dropped from the inherited environment so the test decides them.
SERVICE_VARS = ("DATABASE_", "DB_", "API_TOKENS", "AUTH_", "LOG_", "GUNICORN_", "PROMETHEUS_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Gunicorn:
    def __init__(self, workdir: Path, workers: int, app: str | None = None, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_dir = workdir / "metrics"
        self.stdout = workdir / "stdout.log"
        self.stderr = workdir / "stderr.log"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_VARS)}
        self.env = inherited | {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{workdir / 'heroes.db'}",
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "SHUTDOWN_DRAIN_SECONDS": "0",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            **env,
        }
        self.argv = [str(BIN / "gunicorn"), "-c", str(CONFIG), *([app] if app else [])]
        self.process: subprocess.Popen[bytes] | None = None

    def migrate(self) -> list[dict[str, Any]]:
        """`heroes migrate`; returns its log lines (JSON, like the server's)."""
        done = subprocess.run(
            [str(BIN / "heroes"), "migrate"],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [json.loads(line) for line in done.stdout.splitlines()]

    def start(self, timeout: float = 60) -> None:
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.workdir, stdout=out, stderr=err
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.process.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn not ready in {timeout}s: {self.output()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the master (by pid), then wait for it: the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stdout line, parsed: fails on any line that is not a JSON object."""
        return [json.loads(line) for line in self.stdout.read_text().splitlines()]
