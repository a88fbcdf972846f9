"""The compose stack under test, driven through the docker CLI (host side)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drills.client import Outcome, request_once


class DrillError(Exception):
    """A drill could not run (as opposed to a drill that ran and missed its target)."""


def log(message: str) -> None:
    print(f"[drills {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Stack:
    root: Path
    project: str
    image: str
    tokens_file: Path
    files: tuple[str, ...] = ("docker-compose.yml", "deploy/compose.drills.yml")
    extra_env: dict[str, str] = field(default_factory=dict)

    # --- docker / compose --------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COMPOSE_BAKE": "false",
            "HEROES_IMAGE": self.image,
            "HEROES_PORT": os.environ.get("HEROES_PORT", "0"),
            "DRILLS_API_TOKENS_FILE": str(self.tokens_file),
            **self.extra_env,
        }

    def compose_cmd(self, *args: str) -> list[str]:
        cmd = ["docker", "compose", "-p", self.project]
        for f in self.files:
            cmd += ["-f", f]
        return [*cmd, *args]

    def compose(
        self, *args: str, check: bool = True, timeout: float = 300, quiet: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.compose_cmd(*args),
            cwd=self.root,
            env=self.env,
            capture_output=quiet,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise DrillError(
                f"docker compose {' '.join(args)} exited {proc.returncode}: "
                f"{(proc.stderr or '').strip()[-2000:]}"
            )
        return proc

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise DrillError(f"docker {args[0]} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def container(self, service: str, *, stopped: bool = True) -> str:
        flags = ["ps", "-a", "-q", service] if stopped else ["ps", "-q", service]
        ids = self.compose(*flags).stdout.split()
        if not ids:
            raise DrillError(f"no container for service {service}")
        return ids[0]

    def inspect(self, container: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.docker("inspect", container).stdout)
        return data[0]

    def network(self) -> str:
        networks = self.inspect(self.container("db"))["NetworkSettings"]["Networks"]
        return str(next(iter(networks)))

    def url(self, service: str = "api") -> str:
        hostport = self.compose("port", service, "8000").stdout.strip()
        return f"http://{hostport}"

    def exec_python(self, service: str, code: str, timeout: float = 30) -> str:
        return self.compose("exec", "-T", service, "python", "-c", code, timeout=timeout).stdout

    def psql(self, sql: str) -> list[str]:
        out = self.compose(
            "exec", "-T", "db", "psql", "-U", "heroes", "-d", "heroes", "-At", "-c", sql
        ).stdout
        return [line for line in out.splitlines() if line]

    def logs(self, *services: str, tail: int = 200) -> str:
        proc = self.compose(
            "logs", "--no-color", "--timestamps", "--tail", str(tail), *services, check=False
        )
        return proc.stdout + proc.stderr

    def log_events(self, service: str, since: float) -> list[dict[str, Any]]:
        """The service's JSON log records since a wall-clock time, each with its epoch in "t"."""
        proc = self.docker("logs", "--since", f"{since - 1:.3f}", self.container(service))
        events = []
        for line in (proc.stdout + proc.stderr).splitlines():
            try:
                event = json.loads(line)
                stamp = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            event["t"] = stamp.timestamp()
            if event["t"] >= since - 0.01:
                events.append(event)
        return sorted(events, key=lambda e: float(e["t"]))

    def log_lines(self, service: str, since: float) -> list[tuple[float, str]]:
        """The service's raw log lines since a wall-clock time, with Docker's timestamps."""
        proc = self.docker(
            "logs", "--timestamps", "--since", f"{since - 1:.3f}", self.container(service)
        )
        lines = []
        for line in (proc.stdout + proc.stderr).splitlines():
            stamp, _, text = line.partition(" ")
            try:  # RFC 3339 with nanoseconds: keep microseconds for fromisoformat
                head, _, frac = stamp.rstrip("Z").partition(".")
                t = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()
            except ValueError:
                continue
            if t >= since:
                lines.append((t, text))
        return lines

    def tokens(self) -> list[str]:
        return [t.strip() for t in self.tokens_file.read_text().splitlines() if t.strip()]

    def wait_ready(self, url: str, timeout: float = 60) -> float:
        """Seconds until GET /health/ready answered 200."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if request_once(url, "GET", "/health/ready", timeout=3).outcome is Outcome.OK:
                return time.monotonic() - t0
            time.sleep(0.1)
        raise DrillError(f"{url} not ready after {timeout:.0f}s")

    # --- load from a container on the compose network -----------------------------------------
    def start_load(
        self,
        prefix: str,
        clients: int = 32,
        poll_interval: float = 0.0,
        max_seconds: float = 90,
        keep_alive: bool = True,
    ) -> NetworkLoad:
        """The load generator (drills.load) in a container next to the api: no docker-proxy
        between client and server, so every connection the client sees is the api's own."""
        name = f"{self.project}-load-{prefix}"
        cmd = [
            "docker", "run", "--rm", "-i", "--name", name,
            "--network", self.network(),
            "--user", "10001:10001", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true",
            "--label", f"com.docker.compose.project={self.project}",
            "-v", f"{self.root / 'deploy' / 'drills'}:/opt/drills/drills:ro",
            "-v", f"{self.tokens_file}:/run/secrets/api_tokens:ro",
            "-e", "PYTHONPATH=/opt/drills", "-e", "PYTHONDONTWRITEBYTECODE=1",
            "--entrypoint", "python", self.image,
            "-m", "drills.load", "--url", "http://api:8000",
            "--clients", str(clients), "--prefix", prefix,
            "--token-file", "/run/secrets/api_tokens",
            "--poll-interval", str(poll_interval), "--max-seconds", str(max_seconds),
            *([] if keep_alive else ["--no-keep-alive"]),
        ]  # fmt: skip
        return NetworkLoad(
            name, subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )


class NetworkLoad:
    """A running ``python -m drills.load`` container (see drills.load for the line protocol)."""

    def __init__(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.name, self.proc = name, proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.started_at: float | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_started(self, timeout: float = 60) -> float:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise DrillError(
                f"load container {self.name} did not start in {timeout:.0f}s"
            ) from None
        if line is None:
            raise DrillError(f"load container {self.name} exited early ({self.proc.wait()})")
        self.started_at = float(json.loads(line)["t"])
        return self.started_at

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise DrillError(f"load container {self.name} did not report in time") from None
            if line is None:
                raise DrillError(f"load container {self.name} exited {self.proc.wait()} early")
            data: dict[str, Any] = json.loads(line)
            if data.get("event") == "result":
                self.proc.wait(timeout=30)
                return data

    def kill(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)
        self.proc.wait(timeout=30)
