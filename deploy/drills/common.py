"""What every drill shares: the context, the result, checks, and load-run analysis (host side)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from drills.client import MISSES, Outcome
from drills.stack import NetworkLoad, Stack, log


@dataclass
class Context:
    stack: Stack
    run_id: str  # distinguishes this run's heroes from any other rows
    clients: int = 32
    keep_alive: bool = True  # load clients reuse connections (False: one connection per request)
    warmup: float = 3.0
    outage: float = 10.0
    fuzz_max_examples: int | None = None
    head: str = ""  # alembic head of the image (drill 4 fills it in)
    api_url: str = ""  # http://127.0.0.1:<port>, refreshed after restarts

    def refresh_url(self) -> str:
        self.api_url = self.stack.url()
        return self.api_url


@dataclass
class DrillResult:
    number: int
    title: str
    summary: str = ""  # one line of figures
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    services: tuple[str, ...] = ("api",)  # whose logs to print when it failed

    @property
    def passed(self) -> bool:
        return not self.failures

    def expect(self, condition: bool, failure: str) -> bool:
        if not condition:
            self.failures.append(failure)
            log(f"drill {self.number}: MISS {failure}")
        return condition


# --- load results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    name: str
    outcome: Outcome
    status: int
    started: float
    sent: float | None
    ended: float
    latency: float
    fresh: bool
    error: str
    hero_id: int | None
    json_ok: bool
    snippet: str


@dataclass(frozen=True)
class Poll:
    path: str
    outcome: Outcome
    status: int
    started: float
    latency: float
    reason: str


class LoadRun:
    """The result of drills.load.run, as objects."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.requests = [
            Request(r[0], Outcome(r[1]), *r[2:]) for r in data["requests"]
        ]  # fmt: skip
        self.polls = [Poll(p[0], Outcome(p[1]), *p[2:]) for p in data["polls"]]
        self.started: float = data["started"]
        self.ended: float = data["ended"]

    def of(self, *outcomes: Outcome) -> list[Request]:
        return [r for r in self.requests if r.outcome in outcomes]

    @property
    def acked(self) -> set[str]:
        return {r.name for r in self.requests if r.outcome is Outcome.OK}

    @property
    def misses(self) -> list[Request]:
        return [r for r in self.requests if r.outcome in MISSES]

    @property
    def sent(self) -> list[Request]:
        """Requests that reached the wire (everything except never-connected ones)."""
        return [r for r in self.requests if r.outcome is not Outcome.NOT_SENT]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.requests:
            out[r.outcome.value] = out.get(r.outcome.value, 0) + 1
        return out

    def polls_of(self, path: str, since: float = 0.0, until: float = math.inf) -> list[Poll]:
        return [p for p in self.polls if p.path == path and since <= p.started < until]

    @property
    def rate(self) -> float:
        span = self.ended - self.started
        return len(self.of(Outcome.OK)) / span if span > 0 else 0.0


def describe(requests: list[Request], n: int = 3) -> str:
    """A few failed requests, compactly, for a failure message."""
    return "; ".join(
        f"{r.name} {r.outcome.value} {r.status or ''} {r.error} "
        f"{'fresh' if r.fresh else 'reused'} connection {r.snippet[:80]!r}".strip()
        for r in requests[:n]
    )


def percentile(values: Iterable[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return 0.0
    index = min(len(data) - 1, max(0, math.ceil(q / 100 * len(data)) - 1))
    return data[index]


def db_names(stack: Stack, prefix: str) -> set[str]:
    if not re.fullmatch(r"[a-z0-9-]+", prefix):  # built by the drills; checked all the same
        raise ValueError(f"unsafe prefix {prefix!r}")
    return set(stack.psql(f"SELECT name FROM hero WHERE name LIKE '{prefix}-%'"))  # noqa: S608


def check_persistence(result: DrillResult, stack: Stack, run: LoadRun, prefix: str) -> None:
    """Every acknowledged write is in the database; report writes committed without an ack."""
    stored = db_names(stack, prefix)
    acked = run.acked
    lost = acked - stored
    result.figures.update(
        acked=len(acked), in_db=len(stored & acked), lost=len(lost),
        committed_unacked=len(stored - acked),
    )  # fmt: skip
    result.expect(
        not lost, f"{len(lost)} acknowledged writes missing from the database: {sorted(lost)[:5]}"
    )


def worker_pids(stack: Stack) -> list[int]:
    """gunicorn's workers: the children of PID 1 (the master) in the api container."""
    code = (
        "import json, os\n"
        "kids = []\n"
        "for d in os.listdir('/proc'):\n"
        "    if d.isdigit():\n"
        "        try:\n"
        "            stat = open(f'/proc/{d}/stat').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if int(stat.rsplit(')', 1)[1].split()[1]) == 1:\n"
        "            kids.append(int(d))\n"
        "print(json.dumps(sorted(kids)))\n"
    )
    pids: list[int] = json.loads(stack.exec_python("api", code))
    return pids


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> float | None:
    """Seconds until predicate() is true, or None after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(interval)
    return None


@contextmanager
def warmed_load(ctx: Context, prefix: str, poll_interval: float = 0.0) -> Iterator[NetworkLoad]:
    """The write load of a drill, started and warmed up; killed if the drill fails midway."""
    load = ctx.stack.start_load(
        prefix, ctx.clients, poll_interval=poll_interval, keep_alive=ctx.keep_alive
    )
    try:
        load.wait_started()
        time.sleep(ctx.warmup)
        yield load
    except BaseException:
        load.kill()
        raise
