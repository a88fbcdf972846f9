"""The compose stack under test, driven through the docker CLI (host side)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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

    def containers(self, service: str, *, stopped: bool = False) -> list[str]:
        """The service's container ids, lowest replica number first."""
        flags = ["ps", "-a", "-q", service] if stopped else ["ps", "-q", service]
        ids = self.compose(*flags).stdout.split()
        if not ids:
            return []
        numbers = self.docker(
            "inspect", "-f", '{{index .Config.Labels "com.docker.compose.container-number"}}', *ids
        ).stdout.split()
        return [i for _, i in sorted(zip((int(n) for n in numbers), ids, strict=True))]

    def container(self, service: str, *, stopped: bool = True) -> str:
        """The service's running container with the lowest replica number (any container when
        none runs and ``stopped``)."""
        ids = self.containers(service) or (
            self.containers(service, stopped=True) if stopped else []
        )
        if not ids:
            raise DrillError(f"no container for service {service}")
        return ids[0]

    def inspect(self, container: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.docker("inspect", container).stdout)
        return data[0]

    def network(self) -> str:
        networks = self.inspect(self.container("db"))["NetworkSettings"]["Networks"]
        return str(next(iter(networks)))

    def url(self, service: str = "proxy", port: int = 8080, scheme: str = "http") -> str:
        """The published address of a service's port (the proxy's HTTP listener by default)."""
        hostport = self.compose("port", service, str(port)).stdout.strip()
        return f"{scheme}://{hostport}"

    def exec_python(self, service: str, code: str, timeout: float = 30) -> str:
        """Python in the service's first container (see ``container``)."""
        return self.exec_in(self.container(service), "python", "-c", code, timeout=timeout)

    def exec_in(self, container: str, *argv: str, timeout: float = 30) -> str:
        return self.docker("exec", "-i", container, *argv, timeout=timeout).stdout

    def haproxy(self, command: str) -> str:
        """One command on HAProxy's runtime API (loopback of the proxy container)."""
        script = 'exec 3<>/dev/tcp/127.0.0.1/9999 && printf "%s\\n" "$1" >&3 && cat <&3'
        return self.docker(
            "exec", self.container("proxy"), "bash", "-c", script, "_", command
        ).stdout

    def proxy_servers(self, backend: str = "api") -> list[dict[str, str]]:
        """HAProxy's server slots of a backend: name, addr, op_state (2 = up), admin_state."""
        rows = []
        for line in self.haproxy(f"show servers state {backend}").splitlines():
            f = line.split()
            if len(f) > 7 and f[0].isdigit():
                rows.append({"name": f[3], "addr": f[4], "op_state": f[5], "admin_state": f[6]})
        return rows

    @contextmanager
    def partitioned(self, container: str, network: str) -> Iterator[float]:
        """``container`` cut off ``network`` (packets dropped, sockets left open and silent, as
        in a real partition) until the block ends; yields the moment of the cut (wall clock).
        It comes back under the same aliases (the service name the others resolve)."""
        aliases = self.inspect(container)["NetworkSettings"]["Networks"][network]["Aliases"] or []
        self.docker("network", "disconnect", network, container)
        try:
            yield time.time()
        finally:
            flags = [arg for alias in aliases for arg in ("--alias", alias)]
            self.docker("network", "connect", *flags, network, container)

    def addresses(self, container: str) -> set[str]:
        networks = self.inspect(container)["NetworkSettings"]["Networks"]
        return {str(n["IPAddress"]) for n in networks.values() if n.get("IPAddress")}

    def routed(self, container: str) -> bool:
        """Whether the proxy sends traffic to this container (its slot is up, not in maint)."""
        addrs = self.addresses(container)
        return any(
            s["addr"] in addrs and s["op_state"] == "2" and s["admin_state"] == "0"
            for s in self.proxy_servers()
        )

    def psql(self, sql: str) -> list[str]:
        out = self.compose(
            "exec", "-T", "db", "psql", "-U", "heroes", "-d", "heroes", "-At", "-c", sql
        ).stdout
        # Only "\n" ends a row: splitlines() would also split at U+2028 or \x85 inside a value.
        return [line for line in out.split("\n") if line]

    def logs(self, *services: str, tail: int = 200) -> str:
        proc = self.compose(
            "logs", "--no-color", "--timestamps", "--tail", str(tail), *services, check=False
        )
        return proc.stdout + proc.stderr

    def docker_events(
        self, since: float, until: float, action: str, image: str
    ) -> list[dict[str, Any]]:
        """Docker's events of containers of ``image`` (e.g. "die") between two wall-clock
        times, each with its epoch in "t"."""
        proc = self.docker(
            "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}",
            "--filter", f"event={action}", "--filter", f"image={image}", "--format", "{{json .}}",
        )  # fmt: skip
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        for event in events:
            event["t"] = int(event["timeNano"]) / 1e9
        return events

    def log_events(
        self, service: str, since: float, container: str | None = None
    ) -> list[dict[str, Any]]:
        """The JSON log records of a container (default: the service's first) since a wall-clock
        time, each with its epoch in "t"."""
        target = container or self.container(service)
        proc = self.docker("logs", "--since", f"{since - 1:.3f}", target)
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

    def log_lines(
        self, service: str, since: float, container: str | None = None
    ) -> list[tuple[float, str]]:
        """A container's (default: the service's first) raw log lines since a wall-clock time,
        with Docker's timestamps."""
        target = container or self.container(service)
        proc = self.docker("logs", "--timestamps", "--since", f"{since - 1:.3f}", target)
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

    # --- load from the host, through the proxy's published port --------------------------------
    def start_load(
        self,
        prefix: str,
        url: str | None = None,
        clients: int = 32,
        poll_interval: float = 0.0,
        max_seconds: float = 120,
        keep_alive: bool = True,
        ca_file: Path | None = None,
        ops: tuple[str, ...] | None = None,
        tokens: str = "one",
        rate: float = 0.0,
        retry_after_cap: float = 0.0,
        in_container: bool = False,
        token_file: Path | None = None,
        niced: bool = False,
    ) -> NetworkLoad:
        """The load generator (drills.load) as a process on the host, against ``url`` (default: the
        proxy's published port): what a user of the stack sees (HAProxy behind docker-proxy).

        ``tokens``: "one" (the first of the stack's tokens, or of ``token_file``), "per-client"
        (client i: token i), "random" (a made-up one per request) or "none". ``in_container``: in
        a container of the stack's image on the stack's ``edge`` network instead, against the
        proxy's :8080, so that the proxy sees an address of its own (from the host, every client
        is the bridge's gateway); its URL is then the proxy's on that network. ``niced``: at a
        lower CPU priority (an abusive client runs on a machine of its own, not on the 2 cores it
        attacks: nice 10)."""
        token_args = {
            "one": ["--token-file", str(token_file or self.tokens_file)],
            "per-client": ["--token-file", str(self.tokens_file), "--token-per-client"],
            "random": ["--random-tokens"],
            "none": [],
        }[tokens]
        if in_container:
            url = "http://proxy:8080"
        args = [
            "-m", "drills.load", "--url", url or self.url(),
            "--clients", str(clients), "--prefix", prefix, *token_args,
            "--poll-interval", str(poll_interval), "--max-seconds", str(max_seconds),
            "--rate", str(rate), "--retry-after-cap", str(retry_after_cap),
            *([] if keep_alive else ["--no-keep-alive"]),
            *([] if ca_file is None else ["--ca-file", str(ca_file)]),
            *([] if ops is None else ["--ops", ",".join(ops)]),
        ]  # fmt: skip
        if in_container:
            if tokens in ("one", "per-client"):
                raise DrillError("a load in a container takes no token file (random or none)")
            cmd = [
                "docker", "run", "--rm", "-i", "--name", f"{self.project}-{prefix}",
                "--network", f"{self.project}_edge", "--user", "10001:10001",
                "-v", f"{self.root / 'deploy'}:/drills:ro", "-e", "PYTHONPATH=/drills",
                "--entrypoint", "nice", self.image, "-n", "10" if niced else "0", "python", *args,
            ]  # fmt: skip
        else:
            cmd = [*(["nice", "-n", "10"] if niced else []), sys.executable, *args]
        env = {**os.environ, "PYTHONPATH": str(self.root / "deploy")}
        return NetworkLoad(
            f"load-{prefix}",
            subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
            ),
        )


class NetworkLoad:
    """A running ``python -m drills.load`` process (see drills.load for the line protocol)."""

    #: The start of a progress line (drills.load.progress_line).
    PROGRESS = '{"event":"progress",'

    def __init__(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.name, self.proc = name, proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.started_at: float | None = None
        #: (when, 2xx answers by then), as the load last reported (every 0.1 s while it grows)
        self.progress: tuple[float, int] = (0.0, 0)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at EOF: the reader owns the pipe
            for line in self.proc.stdout:
                if line.startswith(self.PROGRESS):
                    event = json.loads(line)
                    self.progress = (float(event["t"]), int(event["ok"]))
                else:
                    self._lines.put(line)
        self._lines.put(None)

    @property
    def ok(self) -> int:
        """2xx answers so far, as the load last reported."""
        return self.progress[1]

    def wait_started(self, timeout: float = 60) -> float:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise DrillError(f"load {self.name} did not start in {timeout:.0f}s") from None
        if line is None:
            raise DrillError(f"load {self.name} exited early ({self.proc.wait()})")
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
                raise DrillError(f"load {self.name} did not report in time") from None
            if line is None:
                raise DrillError(f"load {self.name} exited {self.proc.wait()} early")
            data: dict[str, Any] = json.loads(line)
            if data.get("event") == "result":
                self.proc.wait(timeout=30)
                return data

    def kill(self) -> None:
        self.proc.kill()  # our own child, by its pid
        self.proc.wait(timeout=30)
