"""Run the reliability and security drills against a fresh compose stack.

    PYTHONPATH=deploy .venv/bin/python -m drills [--only 1,3] [--image heroes:local] [--keep]

One stack (project ``heroes-drills``, two api replicas behind the proxy, whose port is published
on an ephemeral loopback port; API tokens from a secret file in a fresh 0700 directory) serves
every drill but 12 (TLS, on a production stack of its own), in an order that lets each start from
what it needs: 4 (needs an empty database) first, 9 and 8 (rollouts: they change the image)
after the others. The load of every drill goes through the proxy's published port. Each drill
prints one summary line; the run ends with a table, writes the figures as markdown (--results)
and JSON (--json), and always removes the stack (``down -v``) unless --keep. Exit status 1 if
any drill missed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from drills import (
    abuse,
    auth,
    backup,
    connection_kill,
    db_outage,
    full_disk,
    fuzz,
    idempotent_retries,
    migrations,
    monitoring,
    overload,
    partition,
    pitr,
    posture,
    replica_kill,
    rollout,
    scaling,
    shutdown,
    tls,
    tracing,
    worker_crash,
)
from drills.common import QUEUEING, UNLIMITED, Context, DrillResult
from drills.stack import DrillError, Stack, log

DRILLS: dict[int, tuple[str, Callable[[Context], DrillResult]]] = {
    1: (shutdown.TITLE, shutdown.run),
    2: (worker_crash.TITLE, worker_crash.run),
    3: (db_outage.TITLE, db_outage.run),
    4: (migrations.TITLE, migrations.run),
    5: (fuzz.TITLE, fuzz.run),
    6: (auth.TITLE, auth.run),
    7: (posture.TITLE, posture.run),
    8: (rollout.TITLE_NEW, rollout.run_new),
    9: (rollout.TITLE_BROKEN, rollout.run_broken),
    10: (replica_kill.TITLE, replica_kill.run),
    11: (scaling.TITLE, scaling.run),
    12: (tls.TITLE, tls.run),
    13: (backup.TITLE, backup.run),
    14: (idempotent_retries.TITLE, idempotent_retries.run),
    15: (connection_kill.TITLE, connection_kill.run),
    16: (partition.TITLE_DB, partition.run_db),
    17: (partition.TITLE_REPLICA, partition.run_replica),
    18: (full_disk.TITLE, full_disk.run),
    19: (rollout.TITLE_CRASHING, rollout.run_crashing),
    20: (pitr.TITLE_LOST, pitr.run_lost),
    21: (pitr.TITLE_UNDO, pitr.run_undo),
    22: (pitr.TITLE_BROKEN, pitr.run_broken),
    23: (monitoring.TITLE_DB, monitoring.run_db),
    24: (monitoring.TITLE_REPLICA, monitoring.run_replica),
    25: (monitoring.TITLE_REPLICAS, monitoring.run_replicas),
    26: (tracing.TITLE, tracing.run),
    27: (abuse.TITLE, abuse.run),
    28: (overload.TITLE, overload.run),
    29: (rollout.TITLE_BOOT_CRASHES, rollout.run_boot_crashes),
    30: (scaling.TITLE_WORKERS, scaling.run_workers),
}
# 13 replaces the stack's volume (down -v, restore): after the drills that need its history.
# 20 and 21 restore it from the WAL archive (pgBackRest), 22 breaks and repairs archiving.
# 23-25 (monitoring) start the monitoring profile, which then stays up for the drills after them.
# 27 and 28 bring up stacks of their own: last.
ORDER = (
    4, 7, 6, 5, 3, 15, 16, 18, 14, 2, 10, 17, 11, 13, 20, 21, 22, 23, 24, 25, 26, 1, 9, 19, 29, 8,
    12, 27, 28, 30,
)  # fmt: skip


def _parse_only(value: str) -> set[int]:
    chosen = {int(x) for x in value.replace(" ", "").split(",") if x}
    unknown = chosen - set(DRILLS)
    if unknown:
        raise argparse.ArgumentTypeError(f"no drill {sorted(unknown)}; drills are {sorted(DRILLS)}")
    return chosen


def _tokens_file() -> Path:
    """Two random tokens (rotation) in a fresh 0700 directory; the file 0644 so uid 10001 in the
    container can read the bind mount (deploy/secrets/README.md)."""
    directory = Path(tempfile.mkdtemp(prefix="heroes-drills-"))
    path = directory / "api-tokens"
    path.write_text(f"{secrets.token_urlsafe(32)}\n{secrets.token_urlsafe(32)}\n")
    path.chmod(0o644)
    return path


def _run_one(number: int, ctx: Context) -> DrillResult:
    title, func = DRILLS[number]
    log(f"drill {number}: {title}")
    t0 = time.monotonic()
    try:
        result = func(ctx)
    except Exception as exc:  # the drill could not run: that is a failure too
        traceback.print_exc()
        result = DrillResult(number, title)
        result.failures.append(f"could not run: {type(exc).__name__}: {exc}")
        result.summary = "did not complete"
    result.seconds = time.monotonic() - t0
    mark = "PASS" if result.passed else "FAIL"
    print(f"drill {number} {mark} ({result.seconds:.0f}s): {result.summary}", flush=True)
    for failure in result.failures:
        print(f"  miss: {failure}", flush=True)
    if not result.passed:
        services = result.services
        print(f"--- docker compose logs {' '.join(services)} (last lines) ---", flush=True)
        print(ctx.stack.logs(*services, tail=60), flush=True)
    return result


def _table(results: list[DrillResult]) -> str:
    rows = [f"{'#':<2} {'result':<6} {'time':>5}  drill"]
    for r in results:
        rows.append(
            f"{r.number:<2} {'PASS' if r.passed else 'FAIL':<6} {r.seconds:>4.0f}s  {r.title}"
        )
    return "\n".join(rows)


def _markdown(results: list[DrillResult], image: str, total: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Last run: {when}, image `{image}`, {sum(r.passed for r in results)}/{len(results)} "
        f"drills passed in {total:.0f} s (`deploy/scripts/drills.sh`).",
        "",
        "| # | Drill | Figures of the last run | Result |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        figures = r.summary.replace("|", "\\|")
        verdict = "pass" if r.passed else "**FAIL**: " + "; ".join(r.failures).replace("|", "\\|")
        lines.append(f"| {r.number} | {r.title} | {figures} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drills", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--only", type=_parse_only, default=set(DRILLS), help="e.g. 1,3")
    parser.add_argument("--image", default="heroes:local")
    parser.add_argument("--project", default="heroes-drills")
    parser.add_argument("--clients", type=int, default=32, help="concurrent load clients")
    parser.add_argument(
        "--no-keep-alive", action="store_true", help="load: a new connection per request"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before harm")
    parser.add_argument("--outage", type=float, default=10.0, help="database outage, seconds")
    parser.add_argument("--fuzz-max-examples", type=int, default=None)
    parser.add_argument("--results", type=Path, default=Path("/tmp/readme/drills-results.md"))
    parser.add_argument("--json", type=Path, default=None, help="all figures as JSON")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument(
        "--compose-file", action="append", default=[], metavar="FILE",
        help="one more compose override, after deploy/compose.drills.yml (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    root = Path(__file__).resolve().parents[2]
    tokens = _tokens_file()
    files = ("docker-compose.yml", "deploy/compose.drills.yml", *args.compose_file)
    stack = Stack(
        root=root,
        project=args.project,
        image=args.image,
        tokens_file=tokens,
        files=files,
        extra_env={**UNLIMITED, **QUEUEING},
    )
    run_id = f"{int(time.time()) % 10**6:06d}{secrets.token_hex(2)}"
    ctx = Context(stack=stack, run_id=run_id, clients=args.clients, warmup=args.warmup,
                  keep_alive=not args.no_keep_alive,
                  outage=args.outage, fuzz_max_examples=args.fuzz_max_examples)  # fmt: skip
    results: list[DrillResult] = []
    t0 = time.monotonic()
    try:
        stack.compose("down", "-v", "--remove-orphans", check=False)  # an aborted earlier run
        if 4 in args.only:
            log("docker compose up -d --wait db (empty database for drill 4)")
            stack.compose("up", "-d", "--wait", "--wait-timeout", "120", "db")
            results.append(_run_one(4, ctx))
        log(f"docker compose up -d --wait (project {args.project}, image {args.image})")
        t_up = time.monotonic()
        try:
            stack.compose("up", "-d", "--wait", "--wait-timeout", "180")
        except DrillError:
            print(stack.logs(tail=100), flush=True)
            raise
        ctx.refresh_url()
        log(f"stack up in {time.monotonic() - t_up:.1f}s, api at {ctx.api_url}")
        for number in [*ORDER, *sorted(set(DRILLS) - set(ORDER))]:
            if number in args.only and number != 4:
                results.append(_run_one(number, ctx))
    finally:
        if args.keep:
            log(f"--keep: stack {args.project} left running (tokens in {tokens})")
        else:
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "40", check=False)
            shutil.rmtree(tokens.parent, ignore_errors=True)
    total = time.monotonic() - t0
    results.sort(key=lambda r: r.number)

    print("\n" + _table(results))
    for r in results:
        print(f"{r.number}. {r.summary}")
    passed = all(r.passed for r in results)
    print(f"\ndrills: {sum(r.passed for r in results)}/{len(results)} passed in {total:.0f}s")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(_markdown(results, args.image, total))
    log(f"figures written to {args.results}")
    if args.json:
        args.json.write_text(json.dumps(
            [{"number": r.number, "title": r.title, "passed": r.passed, "seconds": r.seconds,
              "figures": r.figures, "failures": r.failures} for r in results],
            indent=2, default=str,
        ))  # fmt: skip
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
