"""The markdown report: machine, versions, one row per app and scenario, the targets."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.load import SCENARIOS, LoadSettings, Measurement

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"

PACKAGES = [
    "heroes",
    "fastapi",
    "starlette",
    "pydantic",
    "sqlalchemy",
    "sqlmodel",
    "psycopg",
    "psycopg-pool",
    "gunicorn",
    "uvicorn",
    "uvicorn-worker",
    "uvloop",
    "httptools",
]


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    ok: bool | None  # None: could not be evaluated (an app was not run)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    words = (out.stdout + out.stderr).split()
    return words[1] if len(words) > 1 else "?"


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _find(results: list[Measurement], app: str, scenario: str) -> Measurement | None:
    return next((m for m in results if m.app == app and m.scenario == scenario), None)


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


def best_ceiling(results: list[Measurement], scenario: str) -> Measurement | None:
    ceilings = [m for m in results if m.app.startswith("ceiling") and m.scenario == scenario]
    return max(ceilings, key=lambda m: m.wrk.rps, default=None)


def targets(results: list[Measurement]) -> list[Target]:
    found: list[Target] = []

    def add(name: str, goal: str, value: float | None, ok: bool | None, unit: str = "x") -> None:
        digits = 2 if unit == "x" else 0
        shown = "n/a" if value is None else f"{value:.{digits}f}{unit}"
        found.append(Target(name, goal, shown, ok))

    def vs_baseline(scenario: str, label: str, goal: float) -> None:
        heroes, base = _find(results, "heroes", scenario), _find(results, "baseline", scenario)
        ratio = _ratio(heroes.wrk.rps, base.wrk.rps) if heroes and base else None
        add(f"{label} vs (a)", f">= {goal:.1f}x", ratio, None if ratio is None else ratio >= goal)

    one = _find(results, "heroes", "get_one")
    ceiling = best_ceiling(results, "get_one")
    share = _ratio(one.wrk.rps, ceiling.wrk.rps) if one and ceiling else None
    # Issue 30's guard: the idioms cost at most a tenth of the raw driver's rate.
    add("GET one vs ceiling (c)", ">= 0.9x", share, None if share is None else share >= 0.9)
    vs_baseline("get_one", "GET one", 3.5)
    p99 = _ratio(one.wrk.p99_ms, ceiling.wrk.p99_ms) if one and ceiling else None
    add("GET one p99 vs ceiling's", "<= 1.2x", p99, None if p99 is None else p99 <= 1.2)
    vs_baseline("get_list", "GET list-100", 5.0)
    vs_baseline("post", "POST", 3.0)
    heroes_rows = [m for m in results if m.app == "heroes"]
    errors = sum(m.wrk.errors for m in heroes_rows)
    ran = bool(heroes_rows)
    add(
        "errors (heroes, all scenarios)",
        "0",
        errors if ran else None,
        (errors == 0) if ran else None,
        "",
    )
    opened = sum(m.new_connections for m in heroes_rows)
    add(
        "new PG connections (heroes, measured)",
        "<= 20",
        opened if ran else None,
        ran and opened <= 20,
        "",
    )
    return found


def _mark(ok: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not run"}[ok]


def render(
    results: list[Measurement],
    titles: dict[str, str],
    settings: LoadSettings,
    pg_version: str,
    quick: bool,
    heroes_env: dict[str, str] | None = None,
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {now}{' (quick mode: smoke test, not a measurement)' if quick else ''} on "
        f"{cpu_model()} ({os.cpu_count()} cores, shared with the load generator), "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"PostgreSQL {pg_version} (fsync off), wrk {wrk_version()}.",
        "",
        f"Versions: {versions()}.",
        "",
        f"Load: wrk, {settings.threads} thread(s), {settings.connections} connections, "
        f"{settings.rounds * settings.round_seconds} s per app and scenario in "
        f"{settings.rounds} interleaved round(s) of {settings.round_seconds} s after a "
        f"{settings.warmup:g} s warm-up, {settings.seeded:,} seeded heroes. Every app: gunicorn, "
        "2 uvicorn workers, its own identically seeded database.",
        "",
        "- (a) `tutorial_app.py` unchanged: `gunicorn tutorial_app:app -k "
        "uvicorn_worker.UvicornWorker -w 2`; SQLAlchemy's default pool (5 kept + 10 overflow "
        "connections that are closed when returned).",
        "- (b) heroes with its shipped defaults: `gunicorn -c deploy/gunicorn.conf.py`, "
        "WEB_CONCURRENCY=2 (the image's default on 2 cores), ENVIRONMENT=development, its own "
        "pool settings (DB_POOL_SIZE=5, DB_MAX_OVERFLOW=10 per worker), LOG_LEVEL=warning as for "
        "every app"
        + "".join(f", **{key}={value}**" for key, value in (heroes_env or {}).items())
        + ".",
        "- (c) `deploy/bench/ceiling_app.py`: the same queries with FastAPI + a raw psycopg 3 "
        "pool (min 5, max 15 per worker), autocommit, orjson, its routes on an `APIRouter` "
        "included in the app as heroes has them; async = `AsyncConnectionPool` + "
        "`async def`, sync = `ConnectionPool` + `def`. The targets use the faster per scenario.",
        "",
        "| Scenario | App | req/s | vs (a) | p50 ms | p99 ms | errors "
        "| app CPU ms/req | DB CPU ms/req | RSS/worker MiB | new PG conns/s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    apps = list(dict.fromkeys(m.app for m in results))
    for scenario in SCENARIOS:
        base = _find(results, "baseline", scenario.key)
        for app in apps:
            m = _find(results, app, scenario.key)
            if m is None:
                continue
            ratio = _ratio(m.wrk.rps, base.wrk.rps) if base else None
            rss = " / ".join(f"{value:.0f}" for value in m.rss_mib)
            churn = m.new_connections / m.measured_s if m.measured_s else 0.0
            lines.append(
                f"| {scenario.title} | {titles.get(app, app)} | {m.wrk.rps:,.0f} "
                f"| {f'{ratio:.2f}x' if ratio is not None else 'n/a'} "
                f"| {m.wrk.p50_ms:.1f} | {m.wrk.p99_ms:.1f} | {m.wrk.errors} "
                f"| {m.app_cpu_ms_per_req:.2f} | {m.db_cpu_ms_per_req:.2f} | {rss} | {churn:.1f} |"
            )
    lines += [
        "",
        "| Target (same run) | Goal | Measured | |",
        "|---|---|--:|---|",
    ]
    for target in targets(results):
        lines.append(f"| {target.name} | {target.goal} | {target.measured} | {_mark(target.ok)} |")
    lines += [
        "",
        "errors = non-2xx responses + socket errors (connect/read/write/timeout). "
        "CPU ms/req = CPU time of the two gunicorn workers (app) or of all PostgreSQL processes "
        "(DB) during the measured window divided by the requests served: less noisy than req/s "
        "on a shared machine. new PG conns/s = connections the app opened to its database "
        "during the measured window (pg_stat_database.sessions) per measured second.",
    ]
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, table: str, fallback: Path) -> Path:
    """Replace the text between the bench markers in README.md; without markers, write the
    table to ``fallback`` instead (README.md belongs to the lead)."""
    text = readme.read_text() if readme.exists() else ""
    start, end = text.find(START), text.find(END)
    if start == -1 or end == -1 or end < start:
        fallback.parent.mkdir(parents=True, exist_ok=True)
        fallback.write_text(f"{START}\n{table}{END}\n")
        return fallback
    readme.write_text(text[: start + len(START)] + "\n" + table + text[end:])
    return readme
