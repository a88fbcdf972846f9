"""One gunicorn server under test: start, wait until it answers, check the wire contract, stop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from bench.procs import ProcessRegistry, children


def http_request(
    port: int, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """One request on a fresh connection; redirects are not followed (a 3xx is a failure)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


class GunicornServer:
    def __init__(
        self,
        key: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        port: int,
        registry: ProcessRegistry,
        logfile: Path,
        workers: int,
    ):
        self.key = key
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.port = port
        self.registry = registry
        self.logfile = logfile
        self.expected_workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.registry.add(self.key, self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.key}: gunicorn exited early\n{self.log_tail()}")
            if len(self.workers()) == self.expected_workers and self._answers():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.key}: not ready after {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.3)
        # Both workers have forked; give the slower one a moment to finish its lifespan startup.
        time.sleep(1.0)
        for _ in range(2 * self.expected_workers):
            if not self._answers():
                raise RuntimeError(f"{self.key}: /heroes/1 stopped answering\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            status, _ = http_request(self.port, "GET", "/heroes/1", timeout=2.0)
        except OSError:
            return False
        return status == 200

    def workers(self) -> list[int]:
        return children(self.proc.pid) if self.proc is not None else []

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def preflight(self, seeded: int) -> None:
        """The three request shapes wrk sends must answer 2xx with the tutorial's bodies."""
        status, body = http_request(self.port, "GET", "/heroes/1")
        if status != 200 or not isinstance(body, dict) or body.get("id") != 1:
            raise RuntimeError(f"{self.key}: GET /heroes/1 -> {status} {body!r}")
        status, body = http_request(self.port, "GET", f"/heroes/{seeded}")
        if status != 200:
            raise RuntimeError(f"{self.key}: GET /heroes/{seeded} -> {status} {body!r}")
        status, body = http_request(self.port, "GET", "/heroes/?offset=0&limit=100")
        if status != 200 or not isinstance(body, list) or len(body) != 100:
            raise RuntimeError(f"{self.key}: GET /heroes/?limit=100 -> {status} {str(body)[:200]}")
        hero = {"name": "preflight", "secret_name": "preflight", "age": 1}
        status, body = http_request(self.port, "POST", "/heroes/", hero)
        if status // 100 != 2 or not isinstance(body, dict) or "id" not in body:
            raise RuntimeError(f"{self.key}: POST /heroes/ -> {status} {body!r}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            workers = self.workers()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                for pid in workers:  # the killed master's workers are ours too
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        self.registry.remove(self.key)
        self.proc = None
