"""What every drill shares: the context, the result, checks, and load-run analysis (host side)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drills.client import MISSES, Outcome, request_once
from drills.stack import DrillError, NetworkLoad, Stack, log

#: Rate limits (haproxy.cfg) for the stacks whose drills load them with 32 clients that share
#: one token and one address (the host's, through the published port): far past what one client
#: may send. Drill 27 tests the limits on a stack of its own.
UNLIMITED = {
    "RATE_LIMIT_CLIENT": "1000000",
    "RATE_LIMIT_ADDRESS": "1000000",
    "RATE_LIMIT_CONCURRENCY": "1000000",
}
#: ... and the shared stack's queue: its 32 closed-loop clients are an overload of a 2-core
#: machine by design, and its drills count every 503 as a failure, so requests queue (up to 10 s)
#: instead of being shed. Drill 28 tests the bounds on a stack of its own.
QUEUEING = {"PROXY_SERVER_MAXCONN": "256", "PROXY_MAX_QUEUE": "4096", "PROXY_QUEUE_TIMEOUT": "10s"}


@dataclass
class Context:
    stack: Stack
    run_id: str  # distinguishes this run's heroes from any other rows
    clients: int = 32
    keep_alive: bool = True  # load clients reuse connections (False: one connection per request)
    warmup: int = 4  # 2xx answers per load client before the harm (one cycle of drills.load)
    outage: float = 10.0
    fuzz_max_examples: int | None = None
    head: str = ""  # alembic head of the image (drill 4 fills it in)
    api_url: str = ""  # http://127.0.0.1:<port>, refreshed after restarts
    stack_up: bool = False  # the shared stack is up (conftest's ctx fixture starts it)

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
    op: str = "POST"  # POST | GET | LIST | PATCH (drills.load.OPS)
    age: int | None = None  # the age written (POST, PATCH)
    retry_after: str | None = None  # the answer's Retry-After header
    ratelimit: str | None = None  # the answer's RateLimit header

    @property
    def is_read(self) -> bool:
        return self.op in ("GET", "LIST")


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
        """Names of the heroes whose creation (POST) was acknowledged."""
        return {r.name for r in self.requests if r.outcome is Outcome.OK and r.op == "POST"}

    @property
    def failed(self) -> list[Request]:
        """Everything that was not a 2xx answer: what a client of the proxy counts as failed."""
        return [r for r in self.requests if r.outcome is not Outcome.OK]

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


def db_ages(stack: Stack, prefix: str) -> dict[str, int | None]:
    """name -> age of this prefix's heroes in the database."""
    if not re.fullmatch(r"[a-z0-9-]+", prefix):  # built by the drills; checked all the same
        raise ValueError(f"unsafe prefix {prefix!r}")
    rows = stack.psql(
        f"SELECT name || '|' || coalesce(age::text, '') FROM hero WHERE name LIKE '{prefix}-%'"  # noqa: S608
    )
    out: dict[str, int | None] = {}
    for row in rows:
        name, _, age = row.rpartition("|")
        out[name] = int(age) if age else None
    return out


def check_persistence(result: DrillResult, stack: Stack, run: LoadRun, prefix: str) -> None:
    """Every acknowledged write is readable: each acknowledged POST's hero is in the database,
    and where a hero's last PATCH was acknowledged, the database holds the age it wrote. Writes
    committed without an acknowledgement are reported."""
    stored = db_ages(stack, prefix)
    acked = run.acked
    lost = acked - set(stored)
    last_patch: dict[str, Request] = {}
    for r in sorted((r for r in run.requests if r.op == "PATCH"), key=lambda r: r.started):
        last_patch[r.name] = r  # one client patches its own heroes one request at a time
    patched = {n: r.age for n, r in last_patch.items() if r.outcome is Outcome.OK}
    wrong = {n: (age, stored.get(n)) for n, age in patched.items() if stored.get(n) != age}
    result.figures.update(
        acked=len(acked), in_db=len(set(stored) & acked), lost=len(lost),
        committed_unacked=len(set(stored) - acked),
        patches_acked=sum(r.op == "PATCH" and r.outcome is Outcome.OK for r in run.requests),
        patch_lost=len(wrong),
    )  # fmt: skip
    result.expect(
        not lost, f"{len(lost)} acknowledged writes missing from the database: {sorted(lost)[:5]}"
    )
    result.expect(
        not wrong,
        f"{len(wrong)} acknowledged PATCHes not in the database (sent, stored): "
        f"{list(wrong.items())[:5]}",
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


def wait_answers(load: NetworkLoad, n: int, timeout: float = 60.0) -> float | None:
    """Seconds until the load had ``n`` 2xx answers that ended after the call, or None after
    ``timeout`` (or once the load has ended short of them). Counted from the load's first report
    made after the call (the ones before it may lag the call by a report's interval)."""
    since = time.time()
    base: list[int] = []

    def answered() -> bool:
        t, ok = load.progress
        if not base and t >= since:
            base.append(ok)
        return bool(base) and ok >= base[0] + n

    waited = wait_for(lambda: answered() or load.proc.poll() is not None, timeout, 0.05)
    return waited if answered() else None


def expect_answers(
    result: DrillResult, load: NetworkLoad, n: int, what: str, timeout: float = 60.0
) -> float | None:
    """wait_answers, a failure of the drill when they do not come."""
    waited = wait_answers(load, n, timeout)
    result.expect(waited is not None, f"fewer than {n} 2xx answers {what} within {timeout:g} s")
    return waited


@contextmanager
def own_stack(
    ctx: Context, suffix: str, tokens_file: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A stack of the drill's own (project ``<drills project>-<suffix>``, the same compose files and
    image), up and healthy; removed (``down -v``) at the end. The shared stack is paused meanwhile
    (cgroup freezer): the drills that use one measure latency, and the shared stack's services
    (the monitoring profile's scrapes and rule evaluations, its exporters) would otherwise share
    the 2 cores with the stack under measurement."""
    base = ctx.stack
    stack = Stack(
        root=base.root, project=f"{base.project}-{suffix}", image=base.image,
        tokens_file=tokens_file or base.tokens_file, files=base.files, extra_env=env or {},
    )  # fmt: skip
    try:
        base.compose("pause", check=False)
        stack.compose("down", "-v", "--remove-orphans", check=False)
        try:
            stack.compose("up", "-d", "--wait", "--wait-timeout", "180", timeout=300)
        except DrillError:
            print(stack.logs(tail=60), flush=True)
            raise
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "40", check=False)
        base.compose("unpause", check=False)


#: The exporter's counter per refusal reason (haproxy.cfg: a backend per reason).
REASONS = (
    "refused_client", "refused_new_keys", "refused_address", "shed_queue_full", "shed_overload",
)  # fmt: skip
EXPORTER = (
    'exec 3<>/dev/tcp/127.0.0.1/8404 && printf "GET /metrics HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3'
)


def refusals(stack: Stack) -> dict[str, int]:
    """haproxy_backend_http_requests_total of each refusal backend, from the proxy's exporter."""
    text = stack.exec_in(stack.container("proxy"), "bash", "-c", EXPORTER)
    out = dict.fromkeys(REASONS, 0)
    for line in text.splitlines():
        if line.startswith("haproxy_backend_http_requests_total{"):
            for reason in REASONS:
                if f'proxy="{reason}"' in line:
                    out[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out


def warm_up(ctx: Context, *loads: NetworkLoad, clients: int | None = None) -> None:
    """Some traffic first: every load's ``ctx.warmup`` 2xx answers per client (``clients``, or
    ctx.clients); DrillError if they do not come within a minute."""
    n = ctx.warmup * (clients or ctx.clients)
    for load in loads:
        if wait_answers(load, n, timeout=60) is None:
            raise DrillError(f"load {load.name}: not {n} 2xx answers within 60 s of its start")


@contextmanager
def warmed_load(
    ctx: Context,
    prefix: str,
    poll_interval: float = 0.0,
    url: str | None = None,
    ca_file: Path | None = None,
) -> Iterator[NetworkLoad]:
    """The mixed load of a drill (through the proxy's published port unless ``url``), started
    and warmed up (ctx.warmup 2xx answers per client); killed if the drill fails midway."""
    load = ctx.stack.start_load(
        prefix, url or ctx.api_url, ctx.clients, poll_interval=poll_interval,
        keep_alive=ctx.keep_alive, ca_file=ca_file,
    )  # fmt: skip
    try:
        load.wait_started()
        warm_up(ctx, load)
        yield load
    except BaseException:
        load.kill()
        raise


#: Python for inside an api container: its established TCP connections on port 8000 (all, or those
#: whose socket inode is in ``inodes``). HTTP/1.1 without pipelining: each holds at most one
#: request, so the count bounds the requests in flight.
ESTABLISHED_8000 = """
def established_8000(inodes=None):
    held = 0
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == '01' and int(f[1].rsplit(':', 1)[1], 16) == 8000:
                if inodes is None or f[9] in inodes:
                    held += 1
    return held
"""


# --- replicas behind the proxy ----------------------------------------------------------------


def proxy_slots(stack: Stack, container: str) -> set[str]:
    """The api backend's server slots that hold this container's address (now)."""
    addresses = stack.addresses(container)
    return {s["name"] for s in stack.proxy_servers() if s["addr"] in addresses}


def proxy_marked_down(stack: Stack, since: float, slots: set[str]) -> float | None:
    """When HAProxy logged one of these api server slots DOWN (first time since ``since``)."""
    for t, text in stack.log_lines("proxy", since=since):
        if " is DOWN" in text and any(f"api/{slot} " in text for slot in slots):
            return t
    return None


LIVE = (
    "import json, urllib.request as r; "
    "print(json.load(r.urlopen('http://127.0.0.1:8000/health/live', timeout=5))['revision'])"
)


def replica_revisions(stack: Stack) -> dict[str, str]:
    """container id (short) -> the revision its /health/live reports, for every running replica."""
    return {c[:12]: stack.exec_in(c, "python", "-c", LIVE).strip() for c in stack.containers("api")}


def proxied_revisions(url: str, n: int = 20) -> list[str]:
    """The revision /health/live reports through the proxy, n times (new connection each)."""
    out = []
    for _ in range(n):
        r = request_once(url, "GET", "/health/live", timeout=5)
        out.append(str(r.json().get("revision")) if r.outcome is Outcome.OK else r.outcome.value)
    return out


def derived_image(stack: Stack, tag: str, *instructions: str) -> str:
    """``FROM <the stack's image>`` plus instructions, built now (legacy builder, from stdin)."""
    dockerfile = "\n".join([f"FROM {stack.image}", *instructions]) + "\n"
    proc = subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise DrillError(f"docker build {tag} failed: {proc.stderr.strip()[-500:]}")
    return tag


def user_script(
    stack: Stack, name: str, *args: str, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """deploy/scripts/NAME as a user runs it against this stack (COMPOSE_PROJECT_NAME,
    COMPOSE_FILE)."""
    return subprocess.run(
        [str(stack.root / "deploy" / "scripts" / name), *args],
        cwd=stack.root, capture_output=True, text=True, timeout=timeout, check=False,
        env={**stack.env, "COMPOSE_PROJECT_NAME": stack.project,
             "COMPOSE_FILE": ":".join(stack.files), **env},
    )  # fmt: skip


def rollout(stack: Stack, image: str, **env: str) -> tuple[int, str, float]:
    """deploy/scripts/rollout.sh IMAGE (with ``env`` set): exit status, stderr, seconds."""
    t0 = time.monotonic()
    proc = user_script(stack, "rollout.sh", image, timeout=300, **env)
    return proc.returncode, proc.stderr, time.monotonic() - t0


#: Run in an api container: SIGKILL one gunicorn worker; print it and the connections it held.
KILL = (
    ESTABLISHED_8000
    + """
import json, os, signal, time

def children():
    out = []
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                stat = open(f'/proc/{d}/stat').read()
            except OSError:
                continue
            if int(stat.rsplit(')', 1)[1].split()[1]) == 1:
                out.append(int(d))
    return sorted(out)

def client_connections(pid):
    inodes = set()
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            link = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if link.startswith('socket:['):
            inodes.add(link[8:-1])
    return established_8000(inodes)

workers = children()
victim = workers[0]
held = client_connections(victim)
os.kill(victim, signal.SIGKILL)
print(json.dumps({'t': time.time(), 'victim': victim, 'workers': workers, 'held': held}))
"""
)


def stored_counts(stack: Stack, prefix: str) -> Counter[str]:
    """How many times each hero named ``<prefix>-...`` is stored."""
    rows = stack.psql(
        f"SELECT name || ' ' || count(*) FROM hero WHERE name LIKE '{prefix}-%' GROUP BY name"  # noqa: S608
    )
    return Counter({name: int(count) for name, count in (row.rsplit(" ", 1) for row in rows)})


def start_keyed_load(
    ctx: Context, prefix: str, clients: int = 16, retry_for: float = 20.0
) -> NetworkLoad:
    """drills.keyed_load as a process on the host, against the api's published port."""
    cmd = [
        sys.executable, "-m", "drills.keyed_load", "--url", ctx.api_url,
        "--clients", str(clients), "--prefix", prefix,
        "--token-file", str(ctx.stack.tokens_file), "--max-seconds", "120",
        "--retry-for", str(retry_for),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ctx.stack.root / "deploy")}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return NetworkLoad(f"keyed-load-{prefix}", proc)
