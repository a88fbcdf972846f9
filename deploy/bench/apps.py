"""The three apps under test and how each one is served.

Fairness rules (identical for every app):
- gunicorn with 2 uvicorn workers on 127.0.0.1, log level warning, no access log;
- its own freshly created and identically seeded database in the same PostgreSQL cluster;
- each app's own, shipped connection pool: what a user who runs it unchanged gets.

The tutorial gets SQLAlchemy's ``create_engine`` defaults (pool_size 5 + max_overflow 10; its
file may not be edited): it keeps 5 connections and closes every overflow connection as soon as it
is returned to a full pool, so with ~16 requests in flight per worker it reconnects constantly (a
defect of the baseline, like the others in its README). The ceiling's psycopg pool (min 5, max 15)
grows to 15 and keeps them. heroes runs with its shipped defaults (psycopg_pool, DB_POOL_SIZE=5 +
DB_MAX_OVERFLOW=10 per worker, kept while in use); ``bench.sh --heroes-env KEY=VALUE`` measures
one setting changed, and the report names it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.gunicorn import production_argv, production_env

REPO = Path(__file__).resolve().parents[2]
# ../shared beside the checkout; BENCH_SHARED_DIR names it for a checkout elsewhere (a worktree).
BASELINE_DIR = (
    Path(os.environ.get("BENCH_SHARED_DIR", REPO / ".." / "shared")) / "baseline"
).resolve()
VENV_BIN = Path(sys.executable).parent

MAX_CONNECTIONS = 15  # per worker: the tutorial's 5 + 10
CEILING_POOL_MIN = 5
POOL_TIMEOUT = 30
WORKERS = 2


@dataclass(frozen=True)
class AppSpec:
    key: str
    title: str
    port: int
    # Commands run once against the fresh database before the server starts (schema).
    schema_commands: list[list[str]]
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO


def base_env() -> dict[str, str]:
    """A clean environment: nothing from the caller's shell (API_TOKENS, DB_* ...) leaks in."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the baseline lives in a shared, read-mostly directory
    env["PYTHONUNBUFFERED"] = "1"
    return env


def uvicorn_gunicorn(target: str, port: int) -> list[str]:
    return [
        str(VENV_BIN / "gunicorn"),
        target,
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]


TUTORIAL_CREATE_ALL = [
    str(VENV_BIN / "python"),
    "-c",
    "import tutorial_app; tutorial_app.create_db_and_tables()",
]


def baseline(port: int, db_url: str) -> AppSpec:
    """(a) The tutorial app, unchanged. Its startup create_all would race between the two
    workers on an empty database, so the table is created once beforehand (then it is a no-op)."""
    env = base_env() | {"DATABASE_URL": db_url}
    return AppSpec(
        key="baseline",
        title="(a) tutorial baseline",
        port=port,
        schema_commands=[TUTORIAL_CREATE_ALL],
        argv=uvicorn_gunicorn("tutorial_app:app", port),
        env=env,
        cwd=BASELINE_DIR,
    )


def heroes(port: int, db_url: str, workdir: Path, extra: dict[str, str] | None = None) -> AppSpec:
    """(b) heroes with its production gunicorn config; only the pool settings are aligned.
    ``extra`` (bench --heroes-env) overrides settings for experiments."""
    # On tmpfs, as in the image (PROMETHEUS_MULTIPROC_DIR=/dev/shm/heroes-metrics): the metric
    # files are mmap'ed, and on a disk every write dirties a page the kernel then writes back.
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else workdir
    metrics_dir = Path(tempfile.mkdtemp(prefix="heroes-bench-metrics-", dir=base))
    atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    settings = {
        "DATABASE_URL": db_url,
        "LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    env = production_env(port, WORKERS, settings | (extra or {}), inherit=base_env())
    title = "(b) heroes" + "".join(f", {key}={value}" for key, value in (extra or {}).items())
    return AppSpec(
        key="heroes",
        title=title,
        port=port,
        schema_commands=[[str(VENV_BIN / "heroes"), "migrate"]],
        argv=production_argv(),
        env=env,
        cwd=REPO,
    )


def heroes_ref(port: int, db_url: str, workdir: Path, source: Path) -> AppSpec:
    """(b) from another source tree (``source``/backend first on the path): the other side of
    an A/B, served and seeded exactly as heroes."""
    spec = heroes(port, db_url, workdir / "ref")
    backend = str(source.resolve() / "backend")
    return replace(
        spec,
        key="heroes-ref",
        title=f"(b) heroes from {source}",
        env=spec.env | {"PYTHONPATH": backend},
    )


def ceiling(port: int, db_url: str, mode: str) -> AppSpec:
    """(c) FastAPI + raw pooled psycopg 3 (deploy/bench/ceiling_app.py), same table as (a)."""
    env = base_env() | {
        "DATABASE_URL": db_url,
        "CEILING_MODE": mode,
        "CEILING_POOL_MIN": str(CEILING_POOL_MIN),
        "CEILING_POOL_MAX": str(MAX_CONNECTIONS),
        "CEILING_POOL_TIMEOUT": str(POOL_TIMEOUT),
        "PYTHONPATH": str(REPO / "deploy"),
    }
    return AppSpec(
        key=f"ceiling-{mode}",
        title=f"(c) ceiling, {mode} raw psycopg",
        port=port,
        schema_commands=[TUTORIAL_CREATE_ALL],
        argv=uvicorn_gunicorn("bench.ceiling_app:create_app()", port),
        env=env,
        cwd=BASELINE_DIR,  # for TUTORIAL_CREATE_ALL; the app itself comes from PYTHONPATH
    )


def heroes_available() -> str | None:
    """None when heroes can be benchmarked, else what is missing."""
    missing = [
        str(path.relative_to(REPO))
        for path in (REPO / "deploy" / "gunicorn.conf.py", REPO / "backend" / "heroes" / "main.py")
        if not path.exists()
    ]
    if not (VENV_BIN / "heroes").exists():
        missing.append(".venv/bin/heroes")
    return ", ".join(missing) if missing else None
