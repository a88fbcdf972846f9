"""wrk scenarios, one measured round, and how rounds add up to one measurement."""

from __future__ import annotations

import bisect
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import cpu_seconds, rss_kib, tree_cpu_seconds

LUA_DIR = Path(__file__).resolve().parent / "lua"
QUANTILES = 1000  # common.lua prints the latency at every 0.1 %


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str


SCENARIOS = [
    Scenario("get_one", "GET one (random id)"),
    Scenario("get_list", "GET list limit=100"),
    Scenario("post", "POST (unique names)"),
    Scenario("mixed", "mixed 80/10/10"),
    Scenario("post_keyed", "POST with Idempotency-Key (unique keys)"),
    Scenario("get_list_last", "GET list limit=100, last page by cursor (no Link)"),
]


@dataclass(frozen=True)
class LoadSettings:
    duration: float  # measured seconds per app and scenario, split over the rounds
    warmup: float
    connections: int
    threads: int
    timeout: float
    seeded: int
    rounds: int = 1

    @property
    def round_seconds(self) -> int:
        return max(1, round(self.duration / self.rounds))


@dataclass(frozen=True)
class WrkRun:
    """What one wrk invocation reports (common.lua's done())."""

    requests: int
    duration_s: float
    non2xx: int
    socket_errors: int  # connect + read + write + timeout
    timeouts: int
    quantiles_us: list[float]  # latency at 0.1 %, 0.2 %, ... 100 %


@dataclass(frozen=True)
class WrkResult:
    """Rounds of one app and scenario added up; latency percentiles of all their requests."""

    requests: int
    duration_s: float
    non2xx: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    @classmethod
    def merge(cls, runs: list[WrkRun]) -> WrkResult:
        # Each run's quantiles stand for QUANTILES equal slices of its requests.
        points = sorted(
            (value, run.requests / QUANTILES) for run in runs for value in run.quantiles_us
        )
        values = [value for value, _ in points]
        cumulative, total = [], 0.0
        for _, weight in points:
            total += weight
            cumulative.append(total)

        def percentile(p: float) -> float:
            if not values or total == 0:
                return 0.0
            index = bisect.bisect_left(cumulative, total * p / 100)
            return values[min(index, len(values) - 1)] / 1e3

        return cls(
            requests=sum(run.requests for run in runs),
            duration_s=sum(run.duration_s for run in runs),
            non2xx=sum(run.non2xx for run in runs),
            socket_errors=sum(run.socket_errors for run in runs),
            timeouts=sum(run.timeouts for run in runs),
            p50_ms=percentile(50),
            p90_ms=percentile(90),
            p99_ms=percentile(99),
            max_ms=max((run.quantiles_us[-1] for run in runs), default=0.0) / 1e3,
        )


@dataclass(frozen=True)
class Measurement:
    app: str
    scenario: str
    wrk: WrkResult
    app_cpu_ms_per_req: float  # gunicorn workers' CPU time / requests
    db_cpu_ms_per_req: float  # PostgreSQL's CPU time / requests
    rss_mib: list[float]  # per worker, after the scenario
    new_connections: int = 0  # PostgreSQL connections the app opened while measured
    measured_s: float = 0.0


@dataclass
class Accumulator:
    """The rounds of one app in one scenario."""

    runs: list[WrkRun] = field(default_factory=list)
    app_cpu_s: float = 0.0
    db_cpu_s: float = 0.0
    new_connections: int = 0
    measured_s: float = 0.0

    def measurement(self, app: str, scenario: str, workers: list[int]) -> Measurement:
        result = WrkResult.merge(self.runs)
        requests = max(result.requests, 1)
        return Measurement(
            app=app,
            scenario=scenario,
            wrk=result,
            app_cpu_ms_per_req=self.app_cpu_s * 1e3 / requests,
            db_cpu_ms_per_req=self.db_cpu_s * 1e3 / requests,
            rss_mib=[rss_kib(pid) / 1024 for pid in workers],
            new_connections=self.new_connections,
            measured_s=self.measured_s,
        )


def write_scripts(directory: Path) -> dict[str, Path]:
    """wrk takes one script: the shared helpers followed by the scenario's request()."""
    directory.mkdir(parents=True, exist_ok=True)
    common = (LUA_DIR / "common.lua").read_text()
    scripts = {}
    for scenario in SCENARIOS:
        path = directory / f"{scenario.key}.lua"
        path.write_text(common + "\n" + (LUA_DIR / f"{scenario.key}.lua").read_text())
        scripts[scenario.key] = path
    return scripts


def run_wrk(script: Path, port: int, settings: LoadSettings, seconds: int, nonce: str) -> WrkRun:
    argv = [
        "wrk",
        f"--threads={settings.threads}",
        f"--connections={settings.connections}",
        f"--duration={seconds}s",
        f"--timeout={settings.timeout:g}s",
        f"--script={script}",
        f"http://127.0.0.1:{port}",
        "--",
        nonce,
        str(settings.seeded),
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line.removeprefix("BENCH_RESULT "))
            break
    else:
        raise RuntimeError(f"wrk printed no BENCH_RESULT line:\n{out}")
    return WrkRun(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        non2xx=data["non2xx"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        timeouts=data["timeout"],
        quantiles_us=[float(value) for value in data["quantiles_us"]],
    )


class Profiler:
    """Optional py-spy recording of every worker during the measured rounds."""

    def __init__(self, pyspy: Path, directory: Path, fmt: str):
        self.pyspy = pyspy
        self.directory = directory
        self.fmt = fmt
        directory.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, pids: list[int], seconds: int) -> list[subprocess.Popen[bytes]]:
        suffix = {"speedscope": "json", "raw": "txt", "flamegraph": "svg"}[self.fmt]
        procs = []
        for index, pid in enumerate(pids):
            out = self.directory / f"{name}-worker{index}.{suffix}"
            argv = [str(self.pyspy), "record", "--pid", str(pid), "--format", self.fmt]
            argv += ["--duration", str(seconds), "--output", str(out), "--rate", "100"]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        return procs


def warm_up(script: Path, port: int, settings: LoadSettings, nonce: str) -> None:
    if settings.warmup > 0:
        run_wrk(script, port, settings, max(1, round(settings.warmup)), nonce)


def measure_round(
    script: Path,
    port: int,
    workers: list[int],
    postmaster: int,
    settings: LoadSettings,
    nonce: str,
    into: Accumulator,
    profile: tuple[Profiler, str] | None = None,
    sessions: Callable[[], int] | None = None,
) -> None:
    """One measured wrk run against one app; its CPU time and PostgreSQL's, and the connections
    it opened (``sessions()``: the app database's connection count), go into ``into``."""
    opened = sessions() if sessions else 0
    app_cpu = sum(cpu_seconds(pid) for pid in workers)
    db_cpu = tree_cpu_seconds(postmaster)
    spies = []
    if profile is not None:
        profiler, name = profile
        spies = profiler.start(name, workers, settings.round_seconds)
    into.runs.append(run_wrk(script, port, settings, settings.round_seconds, nonce))
    # PostgreSQL's figure includes its background processes (alike for every app) and backends
    # that started and ended in the window (the tutorial's overflow connections).
    into.app_cpu_s += sum(cpu_seconds(pid) for pid in workers) - app_cpu
    into.db_cpu_s += tree_cpu_seconds(postmaster) - db_cpu
    into.measured_s += settings.round_seconds
    if sessions:
        into.new_connections += sessions() - opened
    for spy in spies:
        spy.wait(timeout=settings.round_seconds + 30)
