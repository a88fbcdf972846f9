"""Where the workers' CPU goes: py-spy raw (collapsed) stacks summed into a few categories.

``bench.sh --profile DIR`` records every worker during each measured window and prints, per
scenario, each category in CPU milliseconds per request (the share of non-idle samples times the
measured worker CPU per request). ``python -m bench.profiles DIR`` prints the shares alone.

A sample goes to the first *stack-wide* category any of its frames matches (so a COMMIT is a
COMMIT whether psycopg or SQLAlchemy is on top), else to the category of its innermost frame
that matches a *leaf* category. Wrapper frames (middleware ``__call__``) match no stack-wide rule.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from bench.load import SCENARIOS, Measurement

IDLE = re.compile(r"^(Condition\.wait|Queue\.get|wait) \((threading|queue)")

STACK_WIDE = [
    (
        "DB connect (new connections)",
        r"AsyncConnection\.connect|^Connection\.connect \(psycopg|_connect_gen|conninfo_attempts",
    ),
    ("pool checkout/checkin, pre-ping", r"\(sqlalchemy/pool/|do_ping|\(psycopg_pool/"),
    (
        "BEGIN / COMMIT / ROLLBACK round trips",
        r"_commit_gen|_rollback_gen|_start_query \(psycopg/_connection_base",
    ),
    ("logging", r"\(logging/|\(heroes/logs|glogging"),
    (
        "metrics, request id",
        r"prometheus_client|\(heroes/metrics|^finished \(heroes/observability|request_id",
    ),
    (
        "response serialisation",
        r"serialize_response|jsonable_encoder|_prepare_response_content|Response\.render"
        r"|^_json \(bench|^_hero \(bench",
    ),
]
LEAF = [
    (
        "thread pool hop (sync def)",
        r"run_sync_in_worker_thread|^WorkerThread\.|\(threading\.py|\(queue\.py|\(anyio/to_thread",
    ),
    ("SQL execute (psycopg)", r"\(psycopg/"),
    ("SQLAlchemy / SQLModel", r"\(sqlalchemy/|\(sqlmodel/|greenlet"),
    ("request parsing, validation", r"solve_dependencies|request_params_to_args|\(pydantic"),
    ("FastAPI / Starlette / app code", r"\(fastapi/|\(starlette/|\(heroes/|\(bench/|\(anyio/"),
    ("uvicorn / httptools", r"\(uvicorn/|httptools"),
    ("event loop, C code", r"Runner\.run|\(asyncio/"),
]
CATEGORIES = [name for name, _ in STACK_WIDE + LEAF] + ["other"]
_STACK_WIDE = [(name, re.compile(pattern)) for name, pattern in STACK_WIDE]
_LEAF = [(name, re.compile(pattern)) for name, pattern in LEAF]


def categorize(frames: list[str]) -> str:
    for name, pattern in _STACK_WIDE:
        if any(pattern.search(frame) for frame in frames):
            return name
    for frame in reversed(frames):
        for name, pattern in _LEAF:
            if pattern.search(frame):
                return name
    return "other"


def shares(paths: list[Path]) -> Counter[str]:
    """Fraction of the non-idle samples in each category, over all the given files."""
    counts: Counter[str] = Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, number = line.rpartition(" ")
            frames = stack.split(";")
            if not number.isdigit() or IDLE.search(frames[-1]):
                continue
            counts[categorize(frames)] += int(number)
    total = sum(counts.values())
    return Counter({name: count / total for name, count in counts.items()} if total else {})


def _files(directory: Path, app: str, scenario: str) -> list[Path]:
    return sorted(directory.glob(f"{app}-{scenario}-r*-worker*.txt"))


def render(results: list[Measurement], directory: Path, titles: dict[str, str]) -> str:
    """One markdown table per scenario: categories x apps, in worker CPU ms per request."""
    out = [
        "Worker CPU per request by category (ms), from py-spy samples of both workers "
        "(the profiler slows the apps: compare shares, not throughput).",
        "",
    ]
    apps = list(dict.fromkeys(m.app for m in results))
    for scenario in SCENARIOS:
        rows = {m.app: m for m in results if m.scenario == scenario.key}
        if not rows:
            continue
        split = {app: shares(_files(directory, app, scenario.key)) for app in rows}
        present = [app for app in apps if app in rows]
        out.append(f"**{scenario.title}**")
        out.append("")
        out.append("| category | " + " | ".join(titles.get(a, a) for a in present) + " |")
        out.append("|---|" + "--:|" * len(present))
        for category in CATEGORIES:
            if not any(split[a].get(category) for a in present):
                continue
            cells = [
                f"{rows[a].app_cpu_ms_per_req * split[a].get(category, 0.0):.3f}" for a in present
            ]
            out.append(f"| {category} | " + " | ".join(cells) + " |")
        totals = [f"**{rows[a].app_cpu_ms_per_req:.3f}**" for a in present]
        out.append("| total | " + " | ".join(totals) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.profiles DIR  (py-spy --format raw files)", file=sys.stderr)
        return 2
    groups: dict[str, list[Path]] = {}
    for path in sorted(Path(args[0]).glob("*-worker*.txt")):
        groups.setdefault(re.sub(r"(-r\d+)?-worker\d+\.txt$", "", path.name), []).append(path)
    for group, paths in groups.items():
        print(f"{group}:")
        for category, share in shares(paths).most_common():
            print(f"  {share:6.1%}  {category}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
