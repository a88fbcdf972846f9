"""The production server end to end: gunicorn with 3 uvicorn workers sharing Prometheus'
multiprocess directory, and its stdout (JSON lines, request ids) — processes, not ASGI calls."""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from heroes import __version__
from heroes.server.metrics import POOL_SAMPLE_SECONDS

from .gunicorn_server import Gunicorn

WORKERS = 3
POOL_SIZE = 1  # SQLite: one connection per worker process (heroes.db.sqlite)
FOUND = 45  # GET /heroes/{id} of the hero created first: 200
MISSING = 45  # GET /heroes/{id} of ids that do not exist: 404
N = FOUND + MISSING
CONCURRENCY = 9


@dataclass
class Run:
    migrate_lines: list[dict[str, Any]]
    sent_ids: list[str]
    echoed_ids: list[str]
    statuses: Counter[int]
    scrape: dict[str, list[tuple[dict[str, str], float]]]
    files_while_running: set[str]
    files_after_stop: set[str]
    exit_code: int
    log_lines: list[dict[str, Any]]
    stderr: str


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _total(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for got, v in samples if all(got.get(k) == w for k, w in labels.items()))


def _get(url: str, request_id: str) -> tuple[int, str]:
    # A new connection per request (no keep-alive), so the kernel spreads them over the workers.
    response = httpx.get(url, headers={"X-Request-ID": request_id}, timeout=10)
    return response.status_code, response.headers["x-request-id"]


def _wait_for_every_worker(url: str, workers: int) -> None:
    """Readiness answers as soon as one worker is up: wait until every worker has reported its
    pool into the summed gauge."""
    deadline = time.monotonic() + 60
    while _total(_scrape(url)["heroes_db_pool_size"]) < workers * POOL_SIZE:
        assert time.monotonic() < deadline, "not every worker started"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    server = Gunicorn(tmp_path_factory.mktemp("gunicorn"), workers=WORKERS)
    migrate_lines = server.migrate()
    server.start()
    try:
        _wait_for_every_worker(server.url, WORKERS)
        hero = httpx.post(f"{server.url}/heroes/", json={"name": "Deadpond", "secret_name": "D"})
        assert hero.status_code == 200
        urls = [f"{server.url}/heroes/{hero.json()['id']}"] * FOUND
        urls += [f"{server.url}/heroes/{1000 + i}" for i in range(MISSING)]
        sent_ids = [f"e2e-{i}" for i in range(N)]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            answers = list(pool.map(_get, urls, sent_ids))
        # Workers refresh their pool gauges every POOL_SAMPLE_SECONDS: until the next sample a
        # scrape may show slightly older values.
        deadline = time.monotonic() + 3 * POOL_SAMPLE_SECONDS + 5
        scrape = _scrape(server.url)
        while (
            _total(scrape["heroes_http_requests_total"], route="/heroes/{hero_id}") < N
            or _total(scrape["heroes_db_pool_checked_out"])
            or _total(scrape["heroes_http_requests_in_progress"]) != 1
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
            scrape = _scrape(server.url)
        files_while_running = {p.name for p in server.metrics_dir.iterdir()}
    finally:
        exit_code = server.stop()
    return Run(
        migrate_lines=migrate_lines,
        sent_ids=sent_ids,
        echoed_ids=[request_id for _, request_id in answers],
        statuses=Counter(status for status, _ in answers),
        scrape=scrape,
        files_while_running=files_while_running,
        files_after_stop={p.name for p in server.metrics_dir.iterdir()},
        exit_code=exit_code,
        log_lines=server.log_lines(),
        stderr=server.stderr_file.read_text(),
    )


def test_counters_of_all_workers_sum_to_the_requests_sent(run: Run) -> None:
    assert run.statuses == {200: FOUND, 404: MISSING}
    requests = run.scrape["heroes_http_requests_total"]
    route = "/heroes/{hero_id}"
    assert _total(requests, route=route) == N
    assert _total(requests, method="GET", route=route, status="200") == FOUND
    assert _total(requests, method="GET", route=route, status="404") == MISSING
    assert _total(requests, method="POST", route="/heroes/", status="200") == 1
    latency = run.scrape["heroes_http_request_duration_seconds_count"]
    assert _total(latency, route=route) == N
    buckets = run.scrape["heroes_http_request_duration_seconds_bucket"]
    assert _total(buckets, route=route, status="200", le="+Inf") == FOUND


def test_requests_were_spread_over_several_workers(run: Run) -> None:
    sent = set(run.sent_ids)
    pids = {line["pid"] for line in run.log_lines if line.get("request_id") in sent}
    assert len(pids) >= 2
    # Each worker writes its own files into the shared directory.
    counters = {name for name in run.files_while_running if name.startswith("counter_")}
    assert len(counters) >= 2


def test_gauges_are_summed_over_live_workers(run: Run) -> None:
    assert _total(run.scrape["heroes_db_pool_size"]) == WORKERS * POOL_SIZE
    assert _total(run.scrape["heroes_db_pool_checked_out"]) == 0
    assert _total(run.scrape["heroes_http_requests_in_progress"]) == 1  # the scrape itself
    assert run.scrape["heroes_build_info"] == [
        ({"version": __version__, "python": run.scrape["heroes_build_info"][0][0]["python"]}, 1.0)
    ]


def test_sigterm_stops_cleanly_and_drops_the_dead_workers_gauges(run: Run) -> None:
    assert run.exit_code == 0
    live = re.compile(r"gauge_live\w+_\d+\.db")
    assert len([f for f in run.files_while_running if live.fullmatch(f)]) == 2 * WORKERS
    assert [f for f in run.files_after_stop if live.fullmatch(f)] == []
    # Counters stay: a restarted worker's new files add to them, totals never go back.
    assert {f for f in run.files_after_stop if f.startswith("counter_")} == {
        f for f in run.files_while_running if f.startswith("counter_")
    }


def test_every_line_is_json_on_stdout_and_request_lines_carry_the_id(run: Run) -> None:
    assert run.stderr == ""
    loggers = {line["logger"] for line in run.log_lines}
    assert {"gunicorn.error", "uvicorn.error", "heroes.access"} <= loggers
    assert "gunicorn.access" not in loggers
    assert "uvicorn.access" not in loggers
    assert run.echoed_ids == run.sent_ids
    access = {
        line["request_id"]: line
        for line in run.log_lines
        if line["logger"] == "heroes.access" and line["request_id"] in set(run.sent_ids)
    }
    assert set(access) == set(run.sent_ids)
    first = access["e2e-0"]
    assert (first["method"], first["route"], first["status"], first["client"]) == (
        "GET",
        "/heroes/{hero_id}",
        200,
        "127.0.0.1",
    )
    assert first["user_agent"] == f"python-httpx/{httpx.__version__}"
    # Successful probes and scrapes are counted but not logged (a failing one would be).
    quiet = {"/metrics", "/health/ready"}
    assert not [
        line for line in run.log_lines if line.get("path") in quiet and line["status"] < 400
    ]


def test_migrate_logs_json_too(run: Run) -> None:
    assert [line["logger"] for line in run.migrate_lines][-1] == "alembic.runtime.migration"
    assert run.migrate_lines[-1]["msg"].startswith("Running upgrade 0001 -> 0002")


FAILING_APP = """
from heroes.domain import crud
from heroes.main import create_app as production_app


async def broken(**_kwargs):
    raise RuntimeError("secret internal detail")


def create_app():
    crud.get_hero = broken
    return production_app()
"""


def test_unhandled_error_under_gunicorn_is_one_line_with_traceback_and_id(
    tmp_path: Path,
) -> None:
    (tmp_path / "failing_heroes.py").write_text(FAILING_APP)
    server = Gunicorn(tmp_path, workers=1, app="failing_heroes:create_app()")
    server.env["PYTHONPATH"] = str(tmp_path)
    server.migrate()
    server.start()
    try:
        with httpx.Client(base_url=server.url) as client:  # one keep-alive connection
            failed = client.get("/heroes/1", headers={"X-Request-ID": "boom-1"})
            after = client.get("/heroes/", headers={"X-Request-ID": "after-1"})
    finally:
        assert server.stop() == 0
    assert (failed.status_code, failed.json()) == (500, {"detail": "Internal Server Error"})
    assert failed.headers["x-request-id"] == "boom-1"
    assert after.status_code == 200  # the connection survived the 500
    assert server.output().count("Traceback") == 1
    [error] = [line for line in server.log_lines() if "exc" in line]
    assert (error["logger"], error["msg"], error["request_id"]) == (
        "heroes.errors",
        "unhandled error",
        "boom-1",
    )
    assert error["exc"].endswith("RuntimeError: secret internal detail")
    statuses = [
        (line["request_id"], line["status"])
        for line in server.log_lines()
        if line["logger"] == "heroes.access"
    ]
    assert statuses == [("boom-1", 500), ("after-1", 200)]


def test_without_a_multiprocess_dir_the_master_makes_a_private_one(tmp_path: Path) -> None:
    """`gunicorn -c deploy/gunicorn.conf.py` from a checkout (no PROMETHEUS_MULTIPROC_DIR):
    the counters of both workers still add up to exactly the requests sent."""
    workers, sent = 2, 60
    server = Gunicorn(tmp_path, workers=workers)
    del server.env["PROMETHEUS_MULTIPROC_DIR"]
    server.migrate()
    server.start()
    try:
        _wait_for_every_worker(server.url, workers)
        ids = [f"private-{i}" for i in range(sent)]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            statuses = Counter(
                status for status, _ in pool.map(_get, [f"{server.url}/heroes/1"] * sent, ids)
            )
        deadline = time.monotonic() + 3 * POOL_SAMPLE_SECONDS + 5
        counted = 0.0
        while time.monotonic() < deadline:
            counted = _total(
                _scrape(server.url)["heroes_http_requests_total"], route="/heroes/{hero_id}"
            )
            if counted >= sent:
                break
            time.sleep(0.2)
    finally:
        assert server.stop() == 0
    assert statuses == {404: sent}
    assert counted == sent  # not one worker's share
    pids = {line["pid"] for line in server.log_lines() if line.get("request_id") in set(ids)}
    assert len(pids) == workers
    [announced] = [line["msg"] for line in server.log_lines() if "multiprocess" in line["msg"]]
    directory = Path(re.search(r"directory (\S+)", announced)[1])  # type: ignore[index]
    assert directory.name.startswith("heroes-metrics-")
    assert not directory.exists()  # removed by the master on exit
