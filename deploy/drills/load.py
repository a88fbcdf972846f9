"""Closed-loop mixed load with per-request accounting, plus health polling (stdlib only).

Every client thread runs, on its own keep-alive connection and as fast as the API answers, a
cycle of POST (a hero with a unique name, ``<prefix>-<client>-<seq>``), GET one of the heroes it
created, GET a list page, and PATCH the age of one of its heroes; it records the outcome of every
request (drills.client). A client's PATCHes of one hero are sequential, so the last acknowledged
one is what the database must hold. Optional pollers GET /health/ready and /health/live on fresh
connections. Options for the edge drills (27, 28): a steady pace per client (``--rate``), a
token per client (line i of the token file), a new made-up token per request, or none; and
clients that honour ``Retry-After`` on a 429/503, as well-behaved clients do.

Run as a process by the drills (drills.stack.Stack.start_load), with a line protocol::

    python -m drills.load --url http://127.0.0.1:8000 --clients 32 --prefix d1-x --token-file F
    -> {"event": "started", ...}      (one JSON line, once every client runs)
    -> {"event":"progress","ok":N,"t":T}  (N 2xx answers by T; every 0.1 s while N grows)
    <- any line on stdin (or EOF)     stop
    -> {"event": "result", ...}       (one JSON line: every request and poll, see ``run``)
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drills.client import Connection, Outcome, Result, split_url, tls_context

# One request in the result: a list, to keep the JSON small.
# [name, outcome, status, started, sent, ended, latency, fresh, error, hero_id, json_ok, snippet,
#  op, age, retry_after, ratelimit]: name = the hero created or targeted ("" for a list), op =
#  POST | GET | LIST | PATCH, age = the age written (POST, PATCH), retry_after and ratelimit = the
#  answer's Retry-After and RateLimit headers.
Row = list[Any]
#: One client's cycle.
OPS = ("POST", "GET", "LIST", "PATCH")


@dataclass(frozen=True)
class LoadConfig:
    url: str
    clients: int = 32
    prefix: str = "drill"
    token: str | None = None
    max_seconds: float = 120.0
    poll_interval: float = 0.0  # 0: no health polling
    connect_timeout: float = 1.0
    timeout: float = 30.0
    keep_alive: bool = True
    pause_after_not_sent: float = 0.05
    ca_file: str | None = None
    ops: tuple[str, ...] = OPS  # a client's cycle, once it has a hero (its first request: POST)
    rate: float = 0.0  # requests per second per client; 0: as fast as the API answers
    tokens: tuple[str, ...] = ()  # client i sends tokens[i % len]; none: no Authorization
    random_tokens: bool = False  # a new made-up token with every request
    retry_after_cap: float = 0.0  # > 0: after a 429/503, wait its Retry-After (at most this)


def _row(name: str, r: Result, op: str = "POST", age: int | None = None) -> Row:
    hero_id = None
    snippet = ""
    if r.outcome is Outcome.OK:
        try:
            data = r.json()
            hero_id = data.get("id") if isinstance(data, dict) else None
        except ValueError:
            snippet = r.body[:200].decode("utf-8", "replace")
    elif r.body:
        snippet = r.body[:200].decode("utf-8", "replace")
    return [
        name,
        str(r.outcome),
        r.status,
        round(r.started, 4),
        None if r.sent is None else round(r.sent, 4),
        round(r.ended, 4),
        round(r.latency, 4),
        r.fresh,
        r.error,
        hero_id,
        r.is_json,
        snippet,
        op,
        age,
        r.headers.get("retry-after"),
        r.headers.get("ratelimit"),
    ]


def _seconds(retry_after: str | None) -> float:
    """A Retry-After in seconds (its date form is not used by this API); 1 when absent."""
    try:
        return max(0.0, float(retry_after or 1))
    except ValueError:
        return 1.0


def resolve(host: str, port: int, timeout: float = 10.0) -> str:
    """The host's first IPv4/IPv6 address, retrying while the name does not resolve yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            return str(infos[0][4][0])
        except socket.gaierror:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


#: How often a run reports its count of 2xx answers (``on_progress``).
PROGRESS_S = 0.1


def progress_line(ok: int) -> str:
    """The progress event of the line protocol (drills.stack.NetworkLoad reads it): the 2xx
    answers counted by now (wall clock)."""
    return json.dumps({"event": "progress", "ok": ok, "t": time.time()}, separators=(",", ":"))


def report_progress(
    count: Callable[[], int], on_progress: Callable[[int], None], done: threading.Event
) -> threading.Thread:
    """A thread calling ``on_progress(count())`` every PROGRESS_S while the count grows, until
    ``done``."""

    def loop() -> None:
        last = -1
        while not done.wait(PROGRESS_S):
            now = count()
            if now != last:
                on_progress(now)
                last = now

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def run(
    config: LoadConfig,
    stop: threading.Event,
    on_started: Callable[[], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run until ``stop`` is set (or max_seconds); return every request and poll. Once started,
    ``on_progress`` gets the number of 2xx answers so far, every PROGRESS_S while it grows."""
    host, port = split_url(config.url)
    # Resolved once, like a load balancer's target list: a DNS query per connection would make
    # the drills measure Docker's embedded DNS under load (it answers EAI_AGAIN at times) and
    # not the api. The api keeps its address for a whole drill (stopped, never recreated).
    address = resolve(host, port)
    tls = tls_context(config.url, config.ca_file)
    tokens = config.tokens or ((config.token,) if config.token else ())
    # GET and PATCH need a hero of the client's own: it creates one first.
    needs_hero = any(op in ("GET", "PATCH") for op in config.ops)
    rows: list[list[Row]] = [[] for _ in range(config.clients)]
    oks = [0] * config.clients  # 2xx answers per client (each written by its client only)
    polls: list[Row] = []
    conns: list[Connection] = []
    deadline = time.monotonic() + config.max_seconds

    def client(cid: int) -> None:
        conn = Connection(
            address,
            port,
            connect_timeout=config.connect_timeout,
            timeout=config.timeout,
            keep_alive=config.keep_alive,
            host_header=f"{host}:{port}",
            tls=tls,
            server_name=host,
        )
        conns.append(conn)
        out = rows[cid]
        mine: list[tuple[int, str]] = []  # (id, name) of the heroes this client created
        pick = random.Random(cid)  # a load pattern, not a secret
        token = tokens[cid % len(tokens)] if tokens else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        seq = 0
        next_at = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            seq += 1
            if config.rate > 0:  # a steady pace, no catching up in bursts after a slow answer
                stop.wait(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + 1 / config.rate, time.monotonic())
            if config.random_tokens:
                headers = {"Authorization": f"Bearer made-up-{secrets.token_urlsafe(16)}"}
            op = config.ops[seq % len(config.ops)] if mine or not needs_hero else "POST"
            if op == "POST":
                name, age = f"{config.prefix}-{cid}-{seq}", seq % 100
                body = {"name": name, "secret_name": f"s-{name}", "age": age}
                result = conn.request("POST", "/heroes/", body, headers)
                row = _row(name, result, op, age)
                if result.outcome is Outcome.OK and row[9] is not None:
                    mine.append((int(row[9]), name))
            elif op == "LIST":
                result = conn.request("GET", "/heroes/?limit=10", None, headers)
                row = _row("", result, op)
            else:
                hero_id, name = pick.choice(mine)
                if op == "GET":
                    result = conn.request("GET", f"/heroes/{hero_id}", None, headers)
                    row = _row(name, result, op)
                else:
                    age = (seq * 7) % 100
                    result = conn.request("PATCH", f"/heroes/{hero_id}", {"age": age}, headers)
                    row = _row(name, result, op, age)
            out.append(row)
            if result.outcome is Outcome.OK:
                oks[cid] += 1
            if result.outcome is Outcome.NOT_SENT:
                stop.wait(config.pause_after_not_sent)
            elif config.retry_after_cap > 0 and result.status in (429, 503):
                stop.wait(min(config.retry_after_cap, _seconds(row[14])))
        conn.close()

    def poller(path: str) -> None:
        conn = Connection(
            address, port, timeout=5.0, keep_alive=False, host_header=host, tls=tls,
            server_name=host,
        )  # fmt: skip
        while not stop.is_set() and time.monotonic() < deadline:
            r = conn.request("GET", path)
            conn.close()
            reason = ""
            if r.outcome is not Outcome.OK and r.body:
                try:
                    reason = str(r.json().get("reason", ""))
                except (ValueError, AttributeError):
                    reason = r.body[:80].decode("utf-8", "replace")
            polls.append(
                [path, str(r.outcome), r.status, round(r.started, 4), round(r.latency, 4), reason]
            )
            stop.wait(config.poll_interval)

    threads = [
        threading.Thread(target=client, args=(i,), daemon=True) for i in range(config.clients)
    ]
    if config.poll_interval > 0:
        threads += [
            threading.Thread(target=poller, args=(p,), daemon=True)
            for p in ("/health/ready", "/health/live")
        ]
    started = time.time()
    for thread in threads:
        thread.start()
    if on_started is not None:
        on_started()
    done = threading.Event()
    reporter = None if on_progress is None else report_progress(lambda: sum(oks), on_progress, done)
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + config.timeout + 5)
    done.set()
    if reporter is not None:
        reporter.join()
    requests = [row for per_client in rows for row in per_client]
    return {
        "event": "result",
        "config": {
            **asdict(config),
            "token": "[set]" if config.token else None,
            "tokens": len(config.tokens),
        },
        "started": started,
        "ended": time.time(),
        "counts": dict(Counter(row[1] for row in requests)),
        "connections_opened": sum(c.opened for c in conns),
        "stale_reconnects": sum(c.stale for c in conns),
        "requests": requests,
        "polls": polls,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--prefix", default="drill")
    parser.add_argument("--token-file", type=Path, help="first line = bearer token")
    parser.add_argument(
        "--token-per-client", action="store_true", help="client i: line i of --token-file"
    )
    parser.add_argument(
        "--random-tokens", action="store_true", help="a new made-up token with every request"
    )
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s per client (0: max)")
    parser.add_argument(
        "--retry-after-cap", type=float, default=0.0,
        help="> 0: after a 429/503 wait its Retry-After, at most this many seconds",
    )  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--poll-interval", type=float, default=0.0)
    parser.add_argument("--connect-timeout", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--no-keep-alive", action="store_true")
    parser.add_argument("--ca-file", help="CA to trust for an https:// URL")
    parser.add_argument(
        "--ops",
        default=",".join(OPS),
        help="a client's cycle, e.g. GET,LIST (reads after one POST) or POST (writes only)",
    )
    args = parser.parse_args(argv)
    token = None
    tokens: tuple[str, ...] = ()
    if args.token_file:
        lines = [t.strip() for t in args.token_file.read_text().splitlines() if t.strip()]
        token = lines[0]
        tokens = tuple(lines) if args.token_per_client else ()
    config = LoadConfig(
        url=args.url,
        clients=args.clients,
        prefix=args.prefix,
        token=token,
        max_seconds=args.max_seconds,
        poll_interval=args.poll_interval,
        connect_timeout=args.connect_timeout,
        timeout=args.timeout,
        keep_alive=not args.no_keep_alive,
        ca_file=args.ca_file,
        ops=tuple(op for op in args.ops.split(",") if op in OPS) or OPS,
        rate=args.rate,
        tokens=tokens,
        random_tokens=args.random_tokens,
        retry_after_cap=args.retry_after_cap,
    )
    stop = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()  # a line or EOF
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()

    def started() -> None:
        print(json.dumps({"event": "started", "t": time.time()}), flush=True)

    def progress(ok: int) -> None:
        print(progress_line(ok), flush=True)

    result = run(config, stop, started, progress)
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
