"""Entry point: ``PYTHONPATH=deploy python -m bench [--quick] ...`` (deploy/scripts/bench.sh).

All apps are started first (idle servers cost nothing measurable), then every scenario is
measured in rounds: each round drives every app once, one after another, in a rotating order.
Load from other processes on a shared machine drifts over minutes; interleaving spreads it over
all apps alike, so the ratios stay meaningful where back-to-back runs were not.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from bench import apps, pg, profiles
from bench.load import (
    SCENARIOS,
    Accumulator,
    LoadSettings,
    Measurement,
    Profiler,
    measure_round,
    warm_up,
    write_scripts,
)
from bench.report import render, targets, write_readme
from bench.server import preflight, serve
from harness.gunicorn import GunicornServer
from harness.postgres import PostgresServer
from harness.procs import ProcessRegistry, free_port

APP_CHOICES = ("baseline", "heroes", "ceiling")
# The ceiling must be a real one, so a full run serves both raw implementations and the targets
# use the faster of the two per scenario; a quick run keeps the async one, the cheaper
# (docs/performance.md, "What one run does").
QUICK_CEILING_MODE = "async"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.sh",
        description="Benchmark the tutorial baseline, heroes and a raw-psycopg ceiling in one run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: 3 s per scenario in 1 round, 1 s warm-up; never writes the table",
    )
    parser.add_argument(
        "--duration", type=float, help="measured seconds per app and scenario (default 20, quick 3)"
    )
    parser.add_argument(
        "--rounds", type=int, help="split --duration into this many interleaved rounds (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds per app and scenario (default 2, quick 1)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk socket timeout, seconds")
    parser.add_argument("--heroes", type=int, default=10_000, dest="seeded", help="rows to seed")
    parser.add_argument(
        "--apps",
        default=",".join(APP_CHOICES),
        help="comma-separated subset of baseline,heroes,ceiling (default: all)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help="comma-separated subset of " + ",".join(s.key for s in SCENARIOS),
    )
    parser.add_argument(
        "--heroes-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for heroes (repeatable), e.g. DB_POOL_PRE_PING=false to "
        "measure one setting; the report lists it",
    )
    parser.add_argument(
        "--heroes-ref",
        type=Path,
        metavar="DIR",
        help="also serve heroes from another source tree (DIR/backend, e.g. `git archive` of "
        "the commit before a change) as the app heroes-ref, interleaved with heroes: an A/B "
        "of a code change; use with --no-readme",
    )
    parser.add_argument(
        "--ceiling-mode",
        choices=("async", "sync", "both"),
        help="which raw implementation(s) to serve as the ceiling (default: both, quick: async)",
    )
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument(
        "--readme",
        type=Path,
        default=apps.REPO / "docs" / "performance.md",
        help="the page whose bench markers receive the table (default docs/performance.md)",
    )
    parser.add_argument(
        "--fallback-output",
        type=Path,
        default=Path("/tmp/readme/bench-results.md"),
        help="where the table goes when README.md has no bench markers",
    )
    parser.add_argument("--no-readme", action="store_true", help="print only")
    parser.add_argument("--json", type=Path, help="also write raw results as JSON here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record every worker with py-spy during each measured window (slows the apps)",
    )
    parser.add_argument(
        "--profile-format",
        choices=("raw", "speedscope", "flamegraph"),
        default="raw",
        help="raw (collapsed stacks; the run then prints a CPU breakdown per category), "
        "speedscope (open in speedscope.app) or flamegraph (SVG)",
    )
    parser.add_argument(
        "--check-targets",
        action="store_true",
        help="exit 1 when a performance target is missed (never in --quick)",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 10)
    if args.rounds < 1 or args.duration / args.rounds < 1:
        parser.error("every round needs at least 1 s (--duration / --rounds)")
    for item in args.heroes_env:
        if "=" not in item:
            parser.error(f"--heroes-env needs KEY=VALUE, got {item!r}")
    args.app_list = [a.strip() for a in args.apps.split(",") if a.strip()]
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for app in args.app_list:
        if app not in APP_CHOICES:
            parser.error(f"unknown app {app!r}")
    known = {s.key for s in SCENARIOS}
    for scenario in args.scenario_list:
        if scenario not in known:
            parser.error(f"unknown scenario {scenario!r}")
    return args


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def load_settings(args: argparse.Namespace) -> LoadSettings:
    return LoadSettings(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        timeout=args.timeout,
        seeded=args.seeded,
        rounds=args.rounds,
    )


def heroes_env(args: argparse.Namespace) -> dict[str, str]:
    return dict(item.split("=", 1) for item in args.heroes_env)


def build_specs(
    args: argparse.Namespace, cluster: PostgresServer, workdir: Path
) -> list[apps.AppSpec]:
    """The apps in the order asked for, each on its own free port and database."""
    specs = []
    for app in args.app_list:
        if app == "baseline":
            url = cluster.url("bench_baseline")
            specs.append(apps.baseline(free_port(), url))
        elif app == "heroes":
            url = cluster.url("bench_heroes")
            specs.append(apps.heroes(free_port(), url, workdir, heroes_env(args)))
            if args.heroes_ref is not None:
                url = cluster.url("bench_heroes_ref")
                specs.append(apps.heroes_ref(free_port(), url, workdir, args.heroes_ref))
        else:
            mode = args.ceiling_mode or (QUICK_CEILING_MODE if args.quick else "both")
            for variant in ["async", "sync"] if mode == "both" else [mode]:
                url = cluster.url(f"bench_ceiling_{variant}", driver="postgresql")
                specs.append(apps.ceiling(free_port(), url, variant))
    return specs


def database_name(spec: apps.AppSpec) -> str:
    return f"bench_{spec.key.replace('-', '_')}"


class Running:
    """One app under test, started and checked, waiting for load."""

    def __init__(self, spec: apps.AppSpec, server: GunicornServer):
        self.spec = spec
        self.server = server
        self.workers = server.workers()
        self.dbname = database_name(spec)

    def check_workers(self, scenario: str) -> None:
        if self.server.workers() != self.workers:
            raise RuntimeError(f"{self.spec.key}: a worker died during {scenario}")


def start_app(
    spec: apps.AppSpec,
    cluster: PostgresServer,
    args: argparse.Namespace,
    registry: ProcessRegistry,
    workdir: Path,
    started: list[Running],
) -> None:
    """Fresh database, the app's schema, the seed, gunicorn up, the wire contract checked."""
    dbname = database_name(spec)
    _log(f"{spec.title}: fresh database {dbname}, schema, {args.seeded:,} heroes, gunicorn")
    cluster.create_database(dbname)
    for command in spec.schema_commands:
        subprocess.run(command, env=spec.env, cwd=spec.cwd, check=True, stdout=subprocess.DEVNULL)
    pg.seed(cluster, dbname, args.seeded)
    server = serve(spec, workdir, registry)
    started.append(Running(spec, server))  # from here on, stopped by main()'s finally
    try:
        preflight(server, args.seeded)
    except Exception:
        _log(f"{spec.key} server log tail:\n{server.log_tail()}")
        raise


def run_scenarios(
    running: list[Running],
    cluster: PostgresServer,
    args: argparse.Namespace,
    scripts: dict[str, Path],
    profiler: Profiler | None,
) -> list[Measurement]:
    settings = load_settings(args)
    results = []
    for scenario in SCENARIOS:
        if scenario.key not in args.scenario_list:
            continue
        _log(f"{scenario.title}: {settings.rounds} x {settings.round_seconds} s per app")
        script = scripts[scenario.key]
        for app in running:
            warm_up(script, app.spec.port, settings, secrets.token_hex(4))
        totals = {app.spec.key: Accumulator() for app in running}
        for round_no in range(settings.rounds):
            shift = round_no % len(running)
            for app in running[shift:] + running[:shift]:
                measure_round(
                    script,
                    app.spec.port,
                    app.workers,
                    cluster.pid,
                    settings,
                    secrets.token_hex(4),
                    totals[app.spec.key],
                    (profiler, f"{app.spec.key}-{scenario.key}-r{round_no}") if profiler else None,
                    functools.partial(pg.sessions, cluster, app.dbname),
                )
                app.check_workers(scenario.key)
        for app in running:
            m = totals[app.spec.key].measurement(app.spec.key, scenario.key, app.workers)
            _log(
                f"  {app.spec.key:14} {m.wrk.rps:8,.0f} req/s  p50 {m.wrk.p50_ms:7.1f} ms  "
                f"p99 {m.wrk.p99_ms:7.1f} ms  errors {m.wrk.errors}  "
                f"CPU {m.app_cpu_ms_per_req:.2f} ms/req  "
                f"new PG connections {m.new_connections}"
            )
            results.append(m)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)
    if shutil.which("wrk") is None:
        _log("wrk is not installed (deploy/scripts/bench.sh installs it with apt-get)")
        return 2
    if "heroes" in args.app_list and (missing := apps.heroes_available()):
        _log(f"heroes cannot be served yet, missing: {missing} (use --apps baseline,ceiling)")
        return 2
    if "ceiling" in args.app_list and importlib.util.find_spec("psycopg_pool") is None:
        _log("the ceiling app needs psycopg-pool in .venv (it belongs in the dev lock)")
        return 2
    own_workdir = args.workdir is None
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="heroes-bench."))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # postgres (another user) must reach its directory inside
    registry = ProcessRegistry(workdir / "pids")
    profiler = None
    if args.profile is not None:
        found = shutil.which("py-spy", path=f"{apps.VENV_BIN}:{os.environ.get('PATH', '')}")
        if found is None:
            _log("--profile needs py-spy: uv pip install --python .venv/bin/python py-spy")
            return 2
        profiler = Profiler(Path(found), args.profile.resolve(), args.profile_format)
    scripts = write_scripts(workdir / "lua")
    cluster = pg.server(workdir, registry)
    running: list[Running] = []
    try:
        _log(f"starting PostgreSQL in {cluster.root}")
        cluster.start()
        pg_version = pg.version(cluster)
        for spec in build_specs(args, cluster, workdir):
            start_app(spec, cluster, args, registry, workdir, running)
        results = run_scenarios(running, cluster, args, scripts, profiler)
    finally:
        for app in running:
            app.server.stop()
        cluster.stop()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    titles = {app.spec.key: app.spec.title for app in running}
    table = render(results, titles, load_settings(args), pg_version, args.quick, heroes_env(args))
    print(table, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(m) for m in results], indent=2) + "\n")
    if profiler is not None and args.profile_format == "raw":
        print(profiles.render(results, profiler.directory, titles), flush=True)
    if not args.quick and not args.no_readme and profiler is None:
        _log(f"table written to {write_readme(args.readme, table, args.fallback_output)}")
    return exit_status(results, args)


def exit_status(results: list[Measurement], args: argparse.Namespace) -> int:
    """Failures that are not about timing: heroes or the ceiling answering non-2xx or dropping
    connections, or a scenario that served nothing. Timing targets only with --check-targets."""
    status = 0
    for m in results:
        if m.wrk.requests == 0:
            _log(f"FAIL {m.app} {m.scenario}: no request completed")
            status = 1
        if m.app != "baseline" and (m.wrk.non2xx or m.wrk.socket_errors - m.wrk.timeouts):
            _log(f"FAIL {m.app} {m.scenario}: {m.wrk.non2xx} non-2xx, {m.wrk.socket_errors} socket")
            status = 1
    if args.check_targets and not args.quick:
        for target in targets(results):
            if target.ok is False:
                _log(f"target missed: {target.name} {target.goal}, measured {target.measured}")
                status = 1
    return status
