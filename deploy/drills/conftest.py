"""pytest fixtures for the drills: one shared compose stack, a result per drill, a JSON report.

    deploy/scripts/drills.sh                        # every drill (what CI runs)
    deploy/scripts/drills.sh -k partition           # some of them (any pytest selection)
    deploy/scripts/drills.sh -k "drill13 or drill20"  # by number
    .venv/bin/pytest deploy/drills -p no:cacheprovider --image heroes:local -k tls

Each drill is a test marked ``@pytest.mark.drill(number, title, stage=..., services=...)`` that
takes ``ctx`` (the shared stack, brought up on first use) and ``result`` (a ``DrillResult``: its
``expect`` records a miss and the drill goes on, so one run reports every miss and every figure;
the test fails with all of them when it ends). The stage says what a drill needs from the shared
stack or does to it, and the run orders drills by it (see STAGES).
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from drills.common import QUEUEING, UNLIMITED, Context, DrillResult
from drills.stack import DrillError, Stack, log

#: The order of a run. Within a stage drills run by number.
STAGES = (
    "empty-database",  # needs the database before any migration ran
    "shared",  # uses the shared stack and leaves it as it found it
    "replaces-data",  # restores the database volume: after the drills that need its history
    "monitoring",  # starts the monitoring profile, which then stays up
    "restarts",  # restarts or rolls back the replicas
    "new-image",  # leaves the replicas on another image
    "own-stack",  # brings up a stack of its own (the shared one is paused meanwhile)
)
RESULTS = pytest.StashKey[list[DrillResult]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("drills")
    group.addoption("--image", default="heroes:local", help="the api image under test")
    group.addoption("--project", default="heroes-drills", help="compose project of the stack")
    group.addoption("--clients", type=int, default=32, help="concurrent load clients")
    group.addoption("--no-keep-alive", action="store_true", help="a new connection per request")
    group.addoption("--warmup", type=int, default=4, help="2xx answers per load client before harm")
    group.addoption("--outage", type=float, default=10.0, help="database outage, seconds")
    group.addoption("--fuzz-max-examples", type=int, default=None)
    group.addoption("--keep", action="store_true", help="leave the stack running")
    group.addoption("--drills-json", type=Path, default=None, help="write every figure as JSON")
    group.addoption(
        "--compose-file", action="append", default=[], metavar="FILE",
        help="one more compose override, after deploy/compose.drills.yml (repeatable)",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "drill(number, title, stage, services): a drill against the compose stack"
    )
    config.stash[RESULTS] = []


def _marker(item: pytest.Item) -> pytest.Mark:
    mark = item.get_closest_marker("drill")
    if mark is None:
        raise pytest.UsageError(f"{item.nodeid}: every drill needs @pytest.mark.drill(...)")
    return mark


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def key(item: pytest.Item) -> tuple[int, int]:
        mark = _marker(item)
        stage = mark.kwargs.get("stage", "shared")
        if stage not in STAGES:
            raise pytest.UsageError(f"{item.nodeid}: stage {stage!r} is not one of {STAGES}")
        return STAGES.index(stage), int(mark.args[0])

    items.sort(key=key)
    for item in items:  # `-k drill07` selects drill 7 (zero-padded: drill1 would match drill10)
        item.extra_keyword_matches.add(f"drill{int(_marker(item).args[0]):02d}")


def _tokens_file() -> Path:
    """Two random tokens (rotation) in a fresh 0700 directory; the file 0644 so uid 10001 in the
    container can read the bind mount (deploy/secrets/README.md)."""
    directory = Path(tempfile.mkdtemp(prefix="heroes-drills-"))
    path = directory / "api-tokens"
    path.write_text(f"{secrets.token_urlsafe(32)}\n{secrets.token_urlsafe(32)}\n")
    path.chmod(0o644)
    return path


@pytest.fixture(scope="session")
def drill_context(pytestconfig: pytest.Config) -> Iterator[Context]:
    """The shared stack's context, not yet started; removed (``down -v``) at the end."""
    opt = pytestconfig.getoption
    tokens = _tokens_file()
    stack = Stack(
        root=Path(__file__).resolve().parents[2],
        project=opt("project"),
        image=opt("image"),
        tokens_file=tokens,
        files=("docker-compose.yml", "deploy/compose.drills.yml", *opt("compose_file")),
        extra_env={**UNLIMITED, **QUEUEING},
    )
    ctx = Context(
        stack=stack,
        run_id=f"{int(time.time()) % 10**6:06d}{secrets.token_hex(2)}",
        clients=opt("clients"),
        warmup=opt("warmup"),
        keep_alive=not opt("no_keep_alive"),
        outage=opt("outage"),
        fuzz_max_examples=opt("fuzz_max_examples"),
    )
    stack.compose("down", "-v", "--remove-orphans", check=False)  # an aborted earlier run
    try:
        yield ctx
    finally:
        if opt("keep"):
            log(f"--keep: stack {stack.project} left running (tokens in {tokens})")
        else:
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "40", check=False)
            shutil.rmtree(tokens.parent, ignore_errors=True)


@pytest.fixture
def ctx(drill_context: Context) -> Context:
    """The shared stack, up and healthy (started on first use, or again after empty_database)."""
    if not drill_context.stack_up:
        stack = drill_context.stack
        log(f"docker compose up -d --wait (project {stack.project}, image {stack.image})")
        t0 = time.monotonic()
        try:
            stack.compose("up", "-d", "--wait", "--wait-timeout", "180")
        except DrillError:
            print(stack.logs(tail=100), flush=True)
            raise
        drill_context.stack_up = True
        drill_context.refresh_url()
        log(f"stack up in {time.monotonic() - t0:.1f}s, api at {drill_context.api_url}")
    return drill_context


@pytest.fixture
def empty_database(drill_context: Context) -> Context:
    """Only the database, empty: the stack removed with its volumes, then ``db`` started alone."""
    stack = drill_context.stack
    stack.compose("down", "-v", "--remove-orphans", check=False)
    drill_context.stack_up = False
    log("docker compose up -d --wait db (an empty database)")
    stack.compose("up", "-d", "--wait", "--wait-timeout", "120", "db")
    return drill_context


@pytest.fixture
def result(request: pytest.FixtureRequest, drill_context: Context) -> Iterator[DrillResult]:
    """The drill's figures and misses; the test fails at teardown if it missed anything."""
    mark = _marker(request.node)
    number, title = int(mark.args[0]), str(mark.args[1])
    drill = DrillResult(number, title, services=tuple(mark.kwargs.get("services", ("api",))))
    log(f"drill {number}: {title}")
    t0 = time.monotonic()
    request.config.stash[RESULTS].append(drill)
    yield drill
    drill.seconds = time.monotonic() - t0
    print(f"drill {number} ({drill.seconds:.0f}s): {drill.summary}", flush=True)
    if not drill.passed:
        logs = drill_context.stack.logs(*drill.services, tail=60)
        print(f"--- docker compose logs {' '.join(drill.services)} ---\n{logs}", flush=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """The drill fails with every miss it recorded; an exception is a miss too ("could not run")."""
    report = yield
    drill = getattr(item, "funcargs", {}).get("result")
    if call.when != "call" or not isinstance(drill, DrillResult):
        return report
    if call.excinfo is not None:
        drill.failures.append(f"could not run: {call.excinfo.typename}: {call.excinfo.value}")
        drill.summary = drill.summary or "did not complete"
    elif drill.failures:
        report.outcome = "failed"
        report.longrepr = "\n".join(f"miss: {failure}" for failure in drill.failures)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    found = session.config.stash[RESULTS]
    results = sorted(found, key=lambda r: r.number)
    target = session.config.getoption("drills_json", None)
    if target is None or not results:
        return
    image = session.config.getoption("image")
    target.parent.mkdir(parents=True, exist_ok=True)
    drills = [
        {"number": r.number, "title": r.title, "passed": r.passed, "seconds": round(r.seconds, 1),
         "summary": r.summary, "figures": r.figures, "failures": r.failures}
        for r in results
    ]  # fmt: skip
    target.write_text(json.dumps({"image": image, "drills": drills}, indent=2, default=str))
    log(f"figures written to {target}")
