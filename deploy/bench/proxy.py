"""What the proxy costs, and A/B of two images where users meet the service: through HAProxy.

    PYTHONPATH=deploy .venv/bin/python -m bench.proxy [--quick] [--rounds 6] [--seconds 5]
    PYTHONPATH=deploy .venv/bin/python -m bench.proxy --against IMAGE [--connections 8]

Default: one compose stack (docker-compose.yml + deploy/bench/compose.proxy.yml: one api replica
whose port is published as well), seeded with heroes; then wrk (the harness' get_one scenario)
alternates between the proxy's port and the replica's port, round after round, the order rotated
every round, so both see the same machine noise. Both routes pass docker-proxy on the host; the
proxy route adds HAProxy. Reports both rates, their ratio, and the proxy's share of the CPU spent
serving (HAProxy / (HAProxy + api), from the containers' processes on the host).

--against IMAGE: one such stack per image (``--image`` and each ``--against``), loaded one at a
time through its proxy, interleaved the same way, for GET one and POST: the A/B that decides
whether a speed device stays (docs/performance.md, "Speed devices"). The proxy sends the replica
as many requests at once as it has workers, so the api's CPU per request here is the figure at
the concurrency the deployment runs at.

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


class Compose:
    def __init__(self, project: str, image: str) -> None:
        self.project = project
        self.image = image
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


@dataclass
class Route:
    name: str
    port: int
    pids: dict[str, int]  # "proxy" and "api": the containers' main processes on the host
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

    def per_request_ms(self, cpu_s: float) -> float:
        return cpu_s * 1e3 / max(self.requests, 1)


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


def measure(
    routes: list[Route], script: Path, settings: LoadSettings, seconds: int, warmup: int
) -> None:
    """Load each route in turn, ``settings.rounds`` times, the order rotated every round."""
    nonce = secrets.token_hex(4)
    for route in routes:  # warm every path (connections, caches) before measuring
        run_wrk(script, route.port, settings, warmup, nonce)
    for i in range(settings.rounds):
        shift = i % len(routes)
        for route in routes[shift:] + routes[:shift]:
            before = {k: tree_cpu_seconds(p) for k, p in route.pids.items()}
            route.runs.append(run_wrk(script, route.port, settings, seconds, nonce))
            after = {k: tree_cpu_seconds(p) for k, p in route.pids.items()}
            route.proxy_cpu_s += after["proxy"] - before["proxy"]
            route.api_cpu_s += after["api"] - before["api"]
            last = route.runs[-1]
            print(f"[bench.proxy] {script.stem} round {i + 1}/{settings.rounds} {route.name}: "
                  f"{last.requests / last.duration_s:.0f} req/s",
                  file=sys.stderr, flush=True)  # fmt: skip


def _header(settings: LoadSettings, seconds: int, what: str, quick: bool) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = " (quick: a check that it works, not a measurement)" if quick else ""
    return [
        f"Last run: {when}, {settings.rounds} interleaved rounds x {seconds} s per route, {what} "
        f"(wrk, {settings.connections} connections, {settings.threads} threads), one api replica "
        f"(its shipped workers and CPU){mode}.",
        "",
    ]


def report(proxy: Route, direct: Route, settings: LoadSettings, seconds: int, quick: bool) -> str:
    ratio = proxy.rate / direct.rate if direct.rate else 0.0
    serving = proxy.proxy_cpu_s + proxy.api_cpu_s
    share = proxy.proxy_cpu_s / serving if serving else 0.0
    lines = [
        *_header(settings, seconds, "GET one", quick),
        "| route | requests/s | errors | HAProxy CPU ms/req | api CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in (proxy, direct):
        lines.append(
            f"| {r.name} | {r.rate:.0f} | {r.errors} | {r.per_request_ms(r.proxy_cpu_s):.3f} | "
            f"{r.per_request_ms(r.api_cpu_s):.3f} |"
        )
    lines += [
        "",
        f"Through the proxy: **{ratio:.0%} of direct** (target >= 80 %); HAProxy's share of the "
        f"serving CPU (HAProxy / (HAProxy + api)) while loaded through it: **{share:.0%}**.",
    ]
    return "\n".join(lines) + "\n"


def report_ab(
    results: dict[str, list[Route]], settings: LoadSettings, seconds: int, quick: bool
) -> str:
    """One row per scenario and image; each image against the first (``--image``)."""
    lines = [
        *_header(settings, seconds, "through each image's proxy", quick),
        "| scenario | image | requests/s | errors | api CPU ms/req | HAProxy CPU ms/req "
        "| requests/s vs A | api CPU vs A |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario, routes in results.items():
        a = routes[0]
        a_cpu = a.per_request_ms(a.api_cpu_s)
        for r in routes:
            cpu = r.per_request_ms(r.api_cpu_s)
            rate_vs = r.rate / a.rate if a.rate else 0.0
            cpu_vs = cpu / a_cpu if a_cpu else 0.0
            lines.append(
                f"| {scenario} | {r.name} | {r.rate:.0f} | {r.errors} | {cpu:.3f} | "
                f"{r.per_request_ms(r.proxy_cpu_s):.3f} | {rate_vs:.2f}x | {cpu_vs:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def _stack_route(compose: Compose, name: str, service: str, port: int) -> Route:
    pids = {"proxy": compose.pid("proxy"), "api": compose.pid("api")}
    return Route(name, compose.port(service, port), pids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="CI: 2 rounds x 2 s, no timing claims")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5, help="per round and route")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--image", default=os.environ.get("HEROES_IMAGE", "heroes:local"))
    parser.add_argument(
        "--against", action="append", default=[], metavar="IMAGE",
        help="A/B: this image's stack against --image's, through each one's proxy (repeatable)",
    )  # fmt: skip
    parser.add_argument("--project", default=os.environ.get("BENCH_PROJECT", "heroes-bench-proxy"))
    parser.add_argument("--results", type=Path, default=Path("/tmp/readme/proxy-bench.md"))
    args = parser.parse_args(argv)
    rounds, seconds, warmup = (2, 2, 1) if args.quick else (args.rounds, args.seconds, 3)
    settings = LoadSettings(
        duration=seconds * rounds, warmup=warmup, connections=args.connections, threads=2,
        timeout=10, seeded=SEEDED, rounds=rounds,
    )  # fmt: skip
    images = [args.image, *args.against]
    stacks = [Compose(f"{args.project}-{i}" if i else args.project, image)
              for i, image in enumerate(images)]  # fmt: skip
    measured: list[Route] = []
    try:
        for compose in stacks:
            compose("down", "-v", "--remove-orphans")
            compose("up", "-d", "--wait", "--wait-timeout", "180")
        with tempfile.TemporaryDirectory(prefix="heroes-bench-proxy-") as tmp:
            scripts = write_scripts(Path(tmp))
            if args.against:
                results: dict[str, list[Route]] = {}
                for scenario in ("get_one", "post"):
                    routes = [
                        _stack_route(c, f"{'A' if i == 0 else f'B{i}'}: {c.image}", "proxy", 8080)
                        for i, c in enumerate(stacks)
                    ]
                    if scenario == "get_one":
                        for route in routes:
                            _seed(route.port)
                    measure(routes, scripts[scenario], settings, seconds, warmup)
                    results[scenario] = routes
                    measured += routes
                text = report_ab(results, settings, seconds, args.quick)
            else:
                proxy = _stack_route(stacks[0], "through the proxy", "proxy", 8080)
                direct = _stack_route(stacks[0], "straight to the replica", "api", 8000)
                _seed(proxy.port)
                measure([proxy, direct], scripts["get_one"], settings, seconds, warmup)
                measured = [proxy, direct]
                text = report(proxy, direct, settings, seconds, args.quick)
    finally:
        for compose in stacks:
            compose("down", "-v", "--remove-orphans", "--timeout", "40")
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    failed = [r.name for r in measured if not r.requests or r.errors]
    if failed:  # correctness, never speed: every request answered 2xx
        print(f"bench.proxy: requests failed or none were made: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
