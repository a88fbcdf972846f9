"""What the proxy costs: GET one through HAProxy vs straight to the same api replica, in one run.

    PYTHONPATH=deploy .venv/bin/python -m bench.proxy [--quick] [--rounds 6] [--seconds 5]

One compose stack (docker-compose.yml + deploy/bench/compose.proxy.yml: one api replica whose
port is published as well), seeded with heroes; then wrk (the harness' get_one scenario, 32
connections) alternates between the proxy's port and the replica's port, round after round, the
order flipped every round, so both see the same machine noise. Both routes pass docker-proxy on
the host; the proxy route adds HAProxy. Reports both rates, their ratio, and the proxy's share of
the CPU spent serving (HAProxy / (HAProxy + api), from the containers' processes on the host).
--quick (CI) checks that it all works and asserts no timings.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.load import LoadSettings, WrkRun, run_wrk, write_scripts
from bench.procs import tree_cpu_seconds

ROOT = Path(__file__).resolve().parents[2]
FILES = ("docker-compose.yml", "deploy/bench/compose.proxy.yml")
SEEDED = 100


@dataclass
class Route:
    name: str
    port: int
    runs: list[WrkRun] = field(default_factory=list)
    proxy_cpu_s: float = 0.0
    api_cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def rate(self) -> float:
        seconds = sum(r.duration_s for r in self.runs)
        return self.requests / seconds if seconds else 0.0

    @property
    def errors(self) -> int:
        return sum(r.non2xx + r.socket_errors for r in self.runs)


class Compose:
    def __init__(self, project: str, image: str) -> None:
        self.project = project
        self.env = {
            **os.environ, "COMPOSE_BAKE": "false", "HEROES_IMAGE": image, "HEROES_PORT": "0",
            "API_REPLICAS": "1",
        }  # fmt: skip

    def __call__(self, *args: str, timeout: float = 300) -> str:
        cmd = ["docker", "compose", "-p", self.project]
        for f in FILES:
            cmd += ["-f", f]
        proc = subprocess.run(
            [*cmd, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)}: {proc.stderr.strip()[-1500:]}")
        return proc.stdout

    def port(self, service: str, port: int) -> int:
        return int(self(*("port", service, str(port))).strip().rsplit(":", 1)[1])

    def pid(self, service: str) -> int:
        container = self("ps", "-q", service).split()[0]
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", container],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return int(out.strip())


def _seed(port: int) -> None:
    import urllib.request

    for i in range(SEEDED):
        body = json.dumps({"name": f"bench-{i}", "secret_name": f"s-{i}", "age": i}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/heroes/", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def measure(compose: Compose, rounds: int, seconds: int, warmup: int) -> list[Route]:
    proxy = Route("through the proxy", compose.port("proxy", 8080))
    direct = Route("straight to the replica", compose.port("api", 8000))
    _seed(proxy.port)
    settings = LoadSettings(
        duration=seconds * rounds, warmup=warmup, connections=32, threads=2, timeout=10,
        seeded=SEEDED, rounds=rounds,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="heroes-bench-proxy-") as tmp:
        script = write_scripts(Path(tmp))["get_one"]
        nonce = secrets.token_hex(4)
        for route in (proxy, direct):  # warm both paths (connections, caches) before measuring
            run_wrk(script, route.port, settings, warmup, nonce)
        pids = {"proxy": compose.pid("proxy"), "api": compose.pid("api")}
        for i in range(rounds):
            for route in (proxy, direct) if i % 2 == 0 else (direct, proxy):
                before = {k: tree_cpu_seconds(p) for k, p in pids.items()}
                route.runs.append(run_wrk(script, route.port, settings, seconds, nonce))
                after = {k: tree_cpu_seconds(p) for k, p in pids.items()}
                route.proxy_cpu_s += after["proxy"] - before["proxy"]
                route.api_cpu_s += after["api"] - before["api"]
                print(f"[bench.proxy] round {i + 1}/{rounds} {route.name}: "
                      f"{route.runs[-1].requests / route.runs[-1].duration_s:.0f} req/s",
                      file=sys.stderr, flush=True)  # fmt: skip
    return [proxy, direct]


def report(proxy: Route, direct: Route, rounds: int, seconds: int, quick: bool) -> str:
    ratio = proxy.rate / direct.rate if direct.rate else 0.0
    serving = proxy.proxy_cpu_s + proxy.api_cpu_s
    share = proxy.proxy_cpu_s / serving if serving else 0.0
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = " (quick: a check that it works, not a measurement)" if quick else ""
    lines = [
        f"Last run: {when}, {rounds} interleaved rounds x {seconds} s per route, GET one "
        f"(wrk, 32 connections, 2 threads), one api replica (2 workers, 1 CPU){mode}.",
        "",
        "| route | requests/s | errors | HAProxy CPU ms/req | api CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in (proxy, direct):
        n = max(r.requests, 1)
        lines.append(
            f"| {r.name} | {r.rate:.0f} | {r.errors} | {r.proxy_cpu_s * 1e3 / n:.3f} | "
            f"{r.api_cpu_s * 1e3 / n:.3f} |"
        )
    lines += [
        "",
        f"Through the proxy: **{ratio:.0%} of direct** (target >= 80 %); HAProxy's share of the "
        f"serving CPU (HAProxy / (HAProxy + api)) while loaded through it: **{share:.0%}**.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="CI: 2 rounds x 2 s, no timing claims")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5, help="per round and route")
    parser.add_argument("--image", default=os.environ.get("HEROES_IMAGE", "heroes:local"))
    parser.add_argument("--project", default=os.environ.get("BENCH_PROJECT", "heroes-bench-proxy"))
    parser.add_argument("--results", type=Path, default=Path("/tmp/readme/proxy-bench.md"))
    args = parser.parse_args(argv)
    rounds, seconds, warmup = (2, 2, 1) if args.quick else (args.rounds, args.seconds, 3)
    compose = Compose(args.project, args.image)
    try:
        compose("down", "-v", "--remove-orphans")
        compose("up", "-d", "--wait", "--wait-timeout", "180")
        proxy, direct = measure(compose, rounds, seconds, warmup)
    finally:
        compose("down", "-v", "--remove-orphans", "--timeout", "40")
    text = report(proxy, direct, rounds, seconds, args.quick)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    failed = [r.name for r in (proxy, direct) if not r.requests or r.errors]
    if failed:  # correctness, never speed: every request answered 2xx
        print(f"bench.proxy: requests failed or none were made: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
