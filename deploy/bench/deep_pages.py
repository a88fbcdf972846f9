"""Deep pages at 1,000,000 heroes on PostgreSQL: the first page, the last page by cursor, and
the last page by offset, each timed over HTTP against heroes as the benchmark serves it.

    PYTHONPATH=deploy .venv/bin/python -m bench.deep_pages [--heroes 1000000] [--requests 200]

One throw-away server (bench.pg: harness.postgres, durability off), heroes migrated and seeded
like the benchmark's database, gunicorn with the production config (bench.apps.heroes). The
three pages are requested one at a time on one keep-alive connection, in turns, so drifting load
from other processes falls on all three alike. The cursor of the last page is the one the API
gives in the Link header of the page before it. Target: the cursor's last page within 2x the
first page.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import apps, pg
from bench.server import serve
from harness.gunicorn import GunicornServer
from harness.procs import ProcessRegistry, free_port

DBNAME = "bench_heroes_extra"
LIMIT = 100
TARGET_RATIO = 2.0
LINK = re.compile(r'^<([^>]+)>; rel="next"$')


def _get(conn: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} -> {response.status}")
    return response


def pages(conn: http.client.HTTPConnection, heroes: int) -> dict[str, str]:
    """The three paths to time; the cursor one followed from the API's own Link header."""
    before_last = _get(conn, f"/heroes/?offset={heroes - 2 * LIMIT}&limit={LIMIT}")
    match = LINK.match(before_last.getheader("link") or "")
    if match is None:
        raise RuntimeError("the page before the last has no Link header")
    return {
        "first page": f"/heroes/?limit={LIMIT}",
        "last page by cursor": match[1],
        "last page by offset": f"/heroes/?offset={heroes - LIMIT}&limit={LIMIT}",
    }


def measure(port: int, heroes: int, requests: int, warmup: int) -> dict[str, dict[str, float]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        paths = pages(conn, heroes)
        latencies: dict[str, list[float]] = {name: [] for name in paths}
        for turn in range(warmup + requests):
            for name, path in paths.items():
                t0 = time.perf_counter()
                response = _get(conn, path)
                elapsed = time.perf_counter() - t0
                if turn >= warmup:
                    latencies[name].append(elapsed * 1000)
                if name == "last page by cursor" and response.getheader("link") is not None:
                    raise RuntimeError("the last page by cursor has a Link header")
    finally:
        conn.close()
    return {
        name: {
            "p50_ms": statistics.median(values),
            "p90_ms": statistics.quantiles(values, n=10)[-1],
            "mean_ms": statistics.fmean(values),
        }
        for name, values in latencies.items()
    }


def render(figures: dict[str, dict[str, float]], heroes: int, requests: int) -> str:
    first = figures["first page"]["p50_ms"]
    lines = [
        f"GET /heroes/ limit={LIMIT} at {heroes:,} heroes on PostgreSQL, {requests} requests "
        "each, one at a time (python -m bench.deep_pages)",
        "",
        "| page | p50 ms | p90 ms | mean ms | p50 vs first page |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, f in figures.items():
        lines.append(
            f"| {name} | {f['p50_ms']:.2f} | {f['p90_ms']:.2f} | {f['mean_ms']:.2f} "
            f"| {f['p50_ms'] / first:.2f}x |"
        )
    return "\n".join(lines)


@contextmanager
def heroes_on_postgres(seeded: int) -> Iterator[int]:
    """heroes served as the benchmark serves it, on a fresh cluster seeded with ``seeded``
    heroes; its port. Everything is stopped and deleted afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="heroes-bench-extra."))
    workdir.chmod(0o755)  # postgres (another user) must reach its directory inside
    registry = ProcessRegistry(workdir / "pids")
    cluster = pg.server(workdir, registry)
    server: GunicornServer | None = None
    try:
        cluster.start()
        spec = apps.heroes(free_port(), cluster.create_database(DBNAME), workdir)
        for command in spec.schema_commands:
            subprocess.run(
                command, env=spec.env, cwd=spec.cwd, check=True, stdout=subprocess.DEVNULL
            )
        t0 = time.monotonic()
        pg.seed(cluster, DBNAME, seeded)
        print(f"[bench] seeded {seeded:,} heroes in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        server = serve(spec, workdir, registry)
        yield spec.port
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deep_pages", description=__doc__)
    parser.add_argument("--heroes", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per page")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.heroes < 2 * LIMIT:
        parser.error(f"--heroes must be at least {2 * LIMIT}")
    if (missing := apps.heroes_available()) is not None:
        print(f"heroes cannot be served: missing {missing}", file=sys.stderr)
        return 2

    with heroes_on_postgres(args.heroes) as port:
        figures = measure(port, args.heroes, args.requests, args.warmup)

    print(render(figures, args.heroes, args.requests))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ratio = figures["last page by cursor"]["p50_ms"] / figures["first page"]["p50_ms"]
    met = ratio <= TARGET_RATIO
    print(f"\nlast page by cursor: {ratio:.2f}x the first page (target <= {TARGET_RATIO:g}x): "
          f"{'met' if met else 'MISSED'}")  # fmt: skip
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
