"""Keyed write load for drill 14 (stdlib only): POSTs that carry an Idempotency-Key and are sent
again, same key and body, until answered.

Every client thread creates heroes named ``<prefix>-<client>-<seq>`` on its own keep-alive
connection, the name doubling as the key, and retries every failed attempt (transport error,
5xx, 409) with that key for up to --retry-for seconds, also after it was told to stop. Line
protocol, as drills.load's (so drills.stack.NetworkLoad drives it)::

    python -m drills.keyed_load --url http://127.0.0.1:8000 --prefix d14-x --token-file F
    -> {"event": "started", "t": ...}
    -> {"event":"progress","ok":N,"t":T}  (N 2xx answers by T; every 0.1 s while N grows)
    <- any line on stdin (or EOF)     stop
    -> {"event": "result", "attempts": [[key, outcome, status, replayed, sent, latency], ...]}
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from drills.client import Connection, Outcome, Result, split_url
from drills.load import progress_line, report_progress

#: One attempt: [key, outcome, status, replayed (Idempotent-Replayed: true), sent (wall clock),
#: latency (seconds)]
Attempt = list[Any]


def _retry(result: Result) -> bool:
    if result.outcome is Outcome.OK:
        return False
    return result.outcome is not Outcome.CLIENT_ERROR or result.status == 409


def run(args: argparse.Namespace, token: str | None, stop: threading.Event) -> dict[str, Any]:
    host, port = split_url(args.url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    attempts: list[list[Attempt]] = [[] for _ in range(args.clients)]
    oks = [0] * args.clients  # 2xx answers per client (each written by its client only)
    deadline = time.monotonic() + args.max_seconds

    def client(cid: int) -> None:
        conn = Connection(host, port, connect_timeout=1.0, timeout=30.0)
        out = attempts[cid]
        seq = 0
        while not stop.is_set() and time.monotonic() < deadline:
            seq += 1
            key = f"{args.prefix}-{cid}-{seq}"
            body = {"name": key, "secret_name": f"s-{key}", "age": seq % 100}
            give_up = time.monotonic() + args.retry_for
            while True:
                result = conn.request("POST", "/heroes/", body, {**headers, "Idempotency-Key": key})
                replayed = result.headers.get("idempotent-replayed") == "true"
                out.append(
                    [key, str(result.outcome), result.status, replayed, result.sent, result.latency]
                )
                if result.outcome is Outcome.OK:
                    oks[cid] += 1
                if not _retry(result) or time.monotonic() > give_up:
                    break
                time.sleep(0.2 if result.status == 409 else 0.05)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    started = time.time()
    for thread in threads:
        thread.start()
    print(json.dumps({"event": "started", "t": started}), flush=True)
    done = threading.Event()
    reporter = report_progress(
        lambda: sum(oks), lambda ok: print(progress_line(ok), flush=True), done
    )
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + args.retry_for + 35)
    done.set()
    reporter.join()
    return {
        "event": "result",
        "started": started,
        "ended": time.time(),
        "attempts": [attempt for per_client in attempts for attempt in per_client],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--token-file", type=Path, help="first line = bearer token")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--retry-for", type=float, default=20.0, help="seconds per key at most")
    args = parser.parse_args(argv)
    token = args.token_file.read_text().splitlines()[0].strip() if args.token_file else None
    stop = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()  # a line or EOF
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    print(json.dumps(run(args, token, stop), separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
