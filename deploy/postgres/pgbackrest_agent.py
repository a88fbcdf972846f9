#!/usr/bin/env python3
"""pgBackRest agent of the heroes stack: the backup schedule, the backup-health exporter, and the
steps of a point-in-time restore. Standard library only; runs in the database image
(deploy/postgres/Dockerfile), as the postgres user, with the stanza's settings from
/etc/pgbackrest/pgbackrest.conf and PGBACKREST_* variables.

    pgbackrest-agent run                      the `pgbackrest` service: stanza-create, a full
                                              backup when none exists, then one every
                                              HEROES_PITR_FULL_INTERVAL seconds (and one as soon
                                              as archiving recovers from a failure); Prometheus
                                              text on :HEROES_PITR_METRICS_PORT/metrics (9854)
    pgbackrest-agent health                   exit 0 only if archiving works and the newest full
                                              backup is younger than HEROES_PITR_FULL_MAX_AGE
    pgbackrest-agent check-restore [--to T] [--force]   may a restore run now? (changes nothing)
    pgbackrest-agent restore [--to T] [--force]         pgbackrest restore into the data volume

The exporter exists because no maintained pgBackRest exporter is packaged for apt or PyPI (the
Go pgbackrest_exporter is not installable here); its gauges are read from `pgbackrest info
--output=json` and PostgreSQL's pg_stat_archiver, so they say what pgBackRest and the server say.
One JSON log line per event on stderr ({"ts","level","logger":"heroes.pitr","msg",...}).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

PGDATA = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data"))
SOCKET = os.environ.get("PGBACKREST_PG1_SOCKET_PATH", "/var/run/postgresql")
WAL_SEGMENT = 16 * 1024 * 1024
RESTORE_TEST = Path("/var/lib/heroes-restore-test/metrics.prom")
RETRY_S = 60  # after a failed backup (each attempt starts with a checkpoint)
UNITS = {"": 1, "KB": 1024, "KIB": 1024, "MB": 1024**2, "MIB": 1024**2, "GB": 1024**3,
         "GIB": 1024**3, "TB": 1024**4, "TIB": 1024**4}  # fmt: skip


def repos() -> list[int]:
    """The repositories: 1 (local), and 2 (off-host) when PGBACKREST_REPO2_TYPE defines it."""
    return [1, 2] if os.environ.get("PGBACKREST_REPO2_TYPE") else [1]


def timeline(segment: str) -> int:
    """The timeline of a WAL segment name (its first 8 hex digits)."""
    return int(segment[:8], 16)


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) <= 0:
        fail(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def log(level: str, msg: str, **fields: Any) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    record = {"ts": stamp, "level": level, "logger": "heroes.pitr", "msg": msg, **fields}
    print(json.dumps(record, ensure_ascii=False, default=str), file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    """A refusal or a usage error: one line on stderr, exit 1."""
    print(f"pgbackrest-agent: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def pgbackrest(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pgbackrest", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def last_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln] or lines
    return errors[-1] if errors else f"exit {proc.returncode}"


def info() -> dict[str, Any]:
    """The stanza's entry of `pgbackrest info --output=json` ({} when it has none)."""
    proc = pgbackrest("info", "--output=json", timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(last_error(proc))
    stanzas: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return stanzas[0] if stanzas else {}


def backups(
    stanza: dict[str, Any], kind: str | None = None, repo: int | None = None
) -> list[dict[str, Any]]:
    found = [
        b for b in stanza.get("backup", [])
        if (kind is None or b.get("type") == kind)
        and (repo is None or b.get("database", {}).get("repo-key") == repo)
    ]  # fmt: skip
    return sorted(found, key=lambda b: int(b["timestamp"]["stop"]))


def current_timeline() -> int | None:
    """The server's timeline (None in recovery or when it does not answer)."""
    row = sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    return timeline(row[0]) if row and len(row) == 1 and len(row[0]) == 24 else None


def repo_errors(stanza: dict[str, Any]) -> dict[int, str]:
    """Repositories `pgbackrest info` could not read, with its message (a missing stanza is not
    an error here: a new repository, or a new host's empty local one)."""
    return {
        int(r["key"]): str(r["status"].get("message", ""))
        for r in stanza.get("repo", [])
        if r.get("status", {}).get("code", 0) not in (0, 1, 2)
    }


def sql(query: str) -> list[str] | None:
    """One row's fields, through the server's unix socket (None when it does not answer)."""
    try:
        proc = subprocess.run(
            ["psql", "-X", "-A", "-t", "-F", " ", "-h", SOCKET, "-d", "postgres", "-c", query],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    return proc.stdout.split() if proc.returncode == 0 else None


def archiver() -> dict[str, float] | None:
    """pg_stat_archiver as epoch seconds and counts (None when the server does not answer)."""
    fields = sql(
        "SELECT coalesce(extract(epoch FROM last_archived_time), 0),"
        " coalesce(extract(epoch FROM last_failed_time), 0), archived_count, failed_count"
        " FROM pg_stat_archiver"
    )
    if fields is None or len(fields) != 4:
        return None
    archived, failed, archived_n, failed_n = (float(f) for f in fields)
    return {"archived": archived, "failed": failed, "archived_n": archived_n, "failed_n": failed_n}


def size_bytes(text: str) -> int | None:
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]i?B|)\s*", text, re.IGNORECASE)
    return int(match[1]) * UNITS[match[2].upper()] if match else None


class Agent:
    def __init__(self) -> None:
        # Full weekly, differential daily: a daily full would rewrite the whole database every
        # day for no gain in what can be restored (the WAL archive covers every point either way).
        self.interval = env_int("HEROES_PITR_FULL_INTERVAL", 7 * 86400)
        self.diff_interval = env_int("HEROES_PITR_DIFF_INTERVAL", 86400)
        self.max_age = env_int("HEROES_PITR_FULL_MAX_AGE", 2 * self.interval + 3600)
        self.port = env_int("HEROES_PITR_METRICS_PORT", 9854)
        self.lock = threading.Lock()
        self.runs = {"ok": 0, "failed": 0}
        self.last_run_ok = 1
        self.stanza_ok = False
        self.server_start = ""
        self.retry_at = 0.0
        self.wal: dict[str, float] = {"archived": 0.0, "failed": 0.0}  # last known (server down)
        self._info: tuple[float, dict[str, Any] | None] = (0.0, None)
        self.timeline: int | None = None

    # --- what the exporter and the health check read ------------------------------------------
    def stanza(self) -> dict[str, Any] | None:
        """`pgbackrest info`, cached for 5 s (scrapes and health checks come every few s). While
        one call runs, the others get the last answer: a store that stopped answering holds
        `info` for up to its timeout, and a scrape must not wait for it."""
        at, cached = self._info
        if time.monotonic() - at < 5 and at:
            return cached
        if not self.lock.acquire(blocking=False):
            return cached
        try:
            try:
                current: dict[str, Any] | None = info()
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                log("error", "pgbackrest info failed", error=str(exc))
                current = None
            self._info = (time.monotonic(), current)
            return current
        finally:
            self.lock.release()

    def status(self) -> dict[str, float]:
        stanza = self.stanza()
        full = backups(stanza or {}, "full")
        every = backups(stanza or {})
        wal = archiver()
        if wal is not None:
            self.wal = wal
        failing = self.wal["failed"] > self.wal["archived"]
        pending = 0
        with contextlib.suppress(OSError):  # the data volume is not mounted (a one-off run)
            pending = sum(1 for p in (PGDATA / "pg_wal/archive_status").glob("*.ready"))
        last = full[-1] if full else None
        tl = current_timeline()
        if tl is not None:
            self.timeline = tl
        on_timeline = [
            r for r in repos()
            if any(timeline(b["archive"]["start"]) == self.timeline
                   for b in backups(stanza or {}, "full", r))
        ]  # fmt: skip
        errors = repo_errors(stanza or {})
        covered = self.timeline is None or len(on_timeline) == len(repos())
        out = {
            "heroes_backup_last_full_completion_timestamp_seconds": (
                float(last["timestamp"]["stop"]) if last else 0.0
            ),
            "heroes_backup_last_completion_timestamp_seconds": (
                float(every[-1]["timestamp"]["stop"]) if every else 0.0
            ),
            "heroes_backup_last_full_duration_seconds": (
                float(last["timestamp"]["stop"]) - float(last["timestamp"]["start"]) if last else 0
            ),
            "heroes_backup_last_full_repo_bytes": (
                float(last["info"]["repository"]["size"]) if last else 0.0
            ),
            "heroes_backup_full_count": float(len(full)),
            "heroes_backup_repo_up": 1.0 if stanza is not None else 0.0,
            "heroes_backup_stanza_ok": 1.0 if self.stanza_ok else 0.0,
            "heroes_backup_last_run_success": float(self.last_run_ok),
            "heroes_backup_full_max_age_seconds": float(self.max_age),
            "heroes_wal_last_archived_timestamp_seconds": self.wal["archived"],
            "heroes_wal_last_failed_timestamp_seconds": self.wal["failed"],
            "heroes_wal_archive_failing": 1.0 if failing else 0.0,
            "heroes_wal_pending_segments": float(pending),
            "heroes_wal_pending_bytes": float(pending * WAL_SEGMENT),
            "heroes_pitr_database_up": 0.0 if wal is None else 1.0,
            # 0 = backups on this host only (docs/backups.md: production refuses it).
            "heroes_backup_offhost_repositories": float(len(repos()) - 1),
            "heroes_backup_repositories_unreadable": float(len(errors)),
            # Every repository holds a full backup of the server's current timeline (after a
            # point-in-time restore, one is taken at once: a later --latest starts from it).
            "heroes_backup_timeline_covered": 1.0 if covered else 0.0,
            "heroes_pitr_timeline": float(self.timeline or 0),
        }
        budget = size_bytes(os.environ.get("PGBACKREST_ARCHIVE_PUSH_QUEUE_MAX", ""))
        if budget is not None:
            out["heroes_wal_pending_budget_bytes"] = float(budget)
        return out

    def metrics(self) -> str:
        status = self.status()
        lines = []
        for name, value in status.items():
            lines += [f"# TYPE {name} gauge", f"{name} {value:.3f}"]
        for result, count in self.runs.items():
            if result == "ok":
                lines.append("# TYPE heroes_backup_runs_total counter")
            lines.append(f'heroes_backup_runs_total{{result="{result}"}} {count}')
        # The restore test's results (deploy/postgres/restore-test.sh), as it wrote them.
        with contextlib.suppress(OSError):
            lines += RESTORE_TEST.read_text().splitlines()
        for name, key in (("archived", "archived_n"), ("failed", "failed_n")):
            if key in self.wal:
                lines += [f"# TYPE heroes_wal_{name}_total counter",
                          f"heroes_wal_{name}_total {self.wal[key]:.0f}"]  # fmt: skip
        return "\n".join(lines) + "\n"

    # --- the schedule ------------------------------------------------------------------------
    def backup(self, why: str, kind: str = "full") -> bool:
        if time.monotonic() < self.retry_at:
            return False  # a failed run is retried after RETRY_S, not at every 5 s pass
        # Every repository, also after one failed (the off-host store away is no reason to skip
        # the local backup).
        done = [self.backup_repo(why, repo, kind) for repo in repos()]
        return all(done)

    def backup_repo(self, why: str, repo: int, kind: str) -> bool:
        log("info", f"{kind} backup started", reason=why, repo=repo)
        t0 = time.monotonic()
        try:
            # A full backup of a large database takes hours: the bound is a day, and running
            # over it is a failed run (logged, retried), not a crash of the service.
            proc = pgbackrest("backup", f"--type={kind}", f"--repo={repo}", timeout=86400)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess([], 1, "", "ERROR: backup ran over 86400 s")
        seconds = round(time.monotonic() - t0, 2)
        self._info = (0.0, self._info[1])  # the next read asks again, to see the new backup
        if proc.returncode != 0:
            self.runs["failed"] += 1
            self.last_run_ok = 0
            self.retry_at = time.monotonic() + RETRY_S
            log("error", f"{kind} backup failed", status="failed", error=last_error(proc),
                seconds=seconds, repo=repo)  # fmt: skip
            return False
        self.runs["ok"] += 1
        self.last_run_ok = 1
        newest = backups(self.stanza() or {}, kind, repo)
        label = newest[-1]["label"] if newest else None
        log("info", f"{kind} backup written", status="ok", label=label, seconds=seconds,
            kept=len(newest), repo=repo)  # fmt: skip
        return True

    def create_stanza(self) -> None:
        """Idempotent: a stanza that matches this cluster is left as it is. Retried until it
        works (the server may still be starting; a repository of another cluster is an error
        that only an operator can resolve, so it is logged every 30 s, and health stays bad)."""
        while True:
            proc = pgbackrest("stanza-create", timeout=300)
            if proc.returncode == 0:
                self.stanza_ok = True
                log("info", "stanza ready", stanza=os.environ.get("PGBACKREST_STANZA"))
                return
            log("error", "stanza-create failed", error=last_error(proc))
            time.sleep(30 if "do not match" in last_error(proc) else 3)

    def nudge(self) -> None:
        """After the server starts (a restart, the promotion that ends a restore), wake its
        checkpointer once with a CHECKPOINT: one that went to sleep during recovery honours
        archive_timeout only after checkpoint_timeout (docs/backups.md). Right after a start the
        checkpoint has next to nothing to write."""
        row = sql("SELECT extract(epoch FROM pg_postmaster_start_time()), pg_is_in_recovery()")
        if row is None or len(row) != 2 or row[1] != "f" or row[0] == self.server_start:
            return
        if sql("CHECKPOINT") is not None:
            self.server_start = row[0]
            log("info", "server start seen: checkpointer woken for archive_timeout",
                started=float(row[0]))  # fmt: skip

    def schedule(self) -> None:
        self.create_stanza()
        was_failing = recovery_due = False
        while True:
            self.nudge()
            status = self.status()
            newest = status["heroes_backup_last_full_completion_timestamp_seconds"]
            failing = status["heroes_wal_archive_failing"] == 1
            if failing and not was_failing:
                log("error", "WAL archiving is failing", pending=status["heroes_wal_pending_bytes"])
            if was_failing and not failing:
                # WAL past the budget may have been dropped meanwhile: a new base closes the gap.
                log("info", "WAL archiving works again")
                recovery_due = True
            last = status["heroes_backup_last_completion_timestamp_seconds"]
            reason = (
                "archiving recovered" if recovery_due
                else "no full backup yet" if not newest
                else "new timeline" if status["heroes_backup_timeline_covered"] == 0
                else f"every {self.interval}s" if time.time() - newest >= self.interval
                else None
            )  # fmt: skip
            if reason and self.backup(reason):
                recovery_due = False
            elif not reason and time.time() - last >= self.diff_interval:
                self.backup(f"every {self.diff_interval}s", "diff")
            was_failing = failing
            time.sleep(5)

    def serve(self) -> None:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = agent.metrics().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds: no access log

        server = ThreadingHTTPServer(("0.0.0.0", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        log("info", f"metrics on :{self.port}/metrics", interval=self.interval,
            max_age=self.max_age)  # fmt: skip


def health() -> None:
    port = env_int("HEROES_PITR_METRICS_PORT", 9854)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as response:
        text = response.read().decode()
    value = {
        name: float(v)
        for name, _, v in (line.partition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }
    full = value["heroes_backup_last_full_completion_timestamp_seconds"]
    if value["heroes_backup_repo_up"] != 1:
        fail("the pgBackRest repository cannot be read (pgbackrest info failed)")
    if value["heroes_backup_stanza_ok"] != 1:
        fail("the stanza does not match this database (see the service's log: stanza-create)")
    if value["heroes_wal_archive_failing"] == 1:
        fail("WAL archiving is failing (pg_stat_archiver: last failure after last success)")
    if not full:
        fail("no full backup in the repository yet")
    if value["heroes_backup_repositories_unreadable"]:
        fail("an off-host repository cannot be read (see the service's log)")
    if value["heroes_backup_timeline_covered"] != 1:
        fail("no full backup of the current timeline yet (taken after a restore)")
    age = time.time() - full
    if age > value["heroes_backup_full_max_age_seconds"]:
        fail(f"the newest full backup is {age:.0f}s old")
    where = "" if value["heroes_backup_offhost_repositories"] else " (backups on this host only)"
    print(f"ok: newest full backup {age:.0f}s old, archiving works{where}")


def restore_args(argv: list[str]) -> tuple[str | None, bool]:
    to, force, rest = None, False, list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--force":
            force = True
        elif arg == "--to" and rest:
            to = rest.pop(0)
        else:
            fail(f"unknown argument {arg!r}")
    return to, force


SEGMENT = re.compile(r"([0-9A-F]{24})-[0-9a-f]{40}")
COMMIT = re.compile(r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def archived(repo: int) -> dict[str, str]:
    """Archived WAL segment name -> its path in repository ``repo``."""
    stanza = os.environ.get("PGBACKREST_STANZA", "heroes")
    proc = pgbackrest("repo-ls", f"--repo={repo}", "--recurse", "--output=json",
                      f"archive/{stanza}", timeout=120)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(last_error(proc))
    found: dict[str, str] = {}
    for path in json.loads(proc.stdout or "{}"):
        match = SEGMENT.fullmatch(path.rsplit("/", 1)[-1].split(".")[0])
        if match:
            found.setdefault(match[1], f"archive/{stanza}/{path}")
    return found


def position(name: str) -> int:
    """A segment's place in the WAL stream, whatever its timeline (16 MiB segments)."""
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def segment(tl: int, pos: int) -> str:
    return f"{tl:08X}{pos // 256:08X}{pos % 256:08X}"


def last_commit(repo: int, path: str, name: str) -> float | None:
    """The time of the last commit (or abort) recorded in an archived segment: recovery to a
    time stops only at such a record, so this is how far a --to can reach."""
    work = Path(f"/tmp/heroes-restore-check-{os.getpid()}")
    work.mkdir(exist_ok=True)
    try:
        # repo-get decrypts; the segment stays lz4-compressed (compress-type), lz4 undoes that.
        got = subprocess.run(["pgbackrest", "repo-get", f"--repo={repo}", path],
                             capture_output=True, timeout=120, check=False)  # fmt: skip
        if got.returncode != 0:
            raise RuntimeError(got.stderr.decode(errors="replace").strip().splitlines()[-1])
        raw = got.stdout
        if path.endswith(".lz4"):
            raw = subprocess.run(["lz4", "-dc"], input=raw, capture_output=True, timeout=120,
                                 check=True).stdout  # fmt: skip
        (work / name).write_bytes(raw)
        waldump = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_waldump"))[-1]
        dump = subprocess.run(
            [str(waldump), "-p", str(work), name], capture_output=True, text=True, timeout=120,
            check=False, env={**os.environ, "TZ": "UTC"},
        )  # fmt: skip
        stamps = COMMIT.findall(dump.stdout)
        if not stamps:
            return None
        return datetime.fromisoformat(stamps[-1] + "+00:00").timestamp()
    finally:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


def reach(
    repo: int, start: str, wal: dict[str, str], cache: dict[str, float | None]
) -> tuple[float | None, str]:
    """From a backup's first segment, follow the archive (onto a later timeline where one
    continues) to its first gap: the last commit time reached, and the last segment."""
    tl, pos, last = timeline(start), position(start), start
    while True:
        for candidate in (tl + 2, tl + 1, tl):  # the latest timeline, as recovery follows
            if segment(candidate, pos + 1) in wal:
                tl, pos, last = candidate, pos + 1, segment(candidate, pos + 1)
                break
        else:
            break
    # The newest commit on the way: the last segment may hold none (a quiet archive_timeout).
    for back in range(4):
        name = segment(tl, pos - back) if segment(tl, pos - back) in wal else None
        if name is None:
            break
        if name not in cache:
            cache[name] = last_commit(repo, wal[name], name)
        if cache[name] is not None:
            return cache[name], last
    return None, last


def check_restore(to: str | None, force: bool, target: float | None) -> dict[str, Any]:
    """Refuse (one line, exit 1) unless a restore may run; nothing is changed. With a target
    time, the backup pgBackRest will pick (the newest that ended before it, in the first
    repository that has one) must reach it through the archive without a gap."""
    if (PGDATA / "PG_VERSION").exists() and not force:
        fail("the database volume holds a database cluster: --force replaces it")
    try:
        stanza = info()
    except (RuntimeError, ValueError) as exc:
        fail(f"cannot read the pgBackRest repository: {exc}")
    for repo, message in repo_errors(stanza).items():
        fail(f"repository {repo} cannot be read: {message}")
    done = backups(stanza)
    if not done:
        fail("no repository holds a backup of this stanza: nothing to restore from")
    if target is None:
        return stanza
    ranges: list[tuple[int, float, float | None, str]] = []
    chosen = None
    for repo in repos():
        try:
            wal = archived(repo)
        except RuntimeError as exc:
            fail(f"cannot list repository {repo}'s WAL archive: {exc}")
        cache: dict[str, float | None] = {}
        mine = backups(stanza, repo=repo)
        for b in mine[-3:]:  # the newest few: each costs one segment read
            end, last = reach(repo, b["archive"]["start"], wal, cache)
            ranges.append((repo, float(b["timestamp"]["stop"]), end, last))
        before = [b for b in mine if float(b["timestamp"]["stop"]) < target]
        if chosen is None and before:
            b = before[-1]
            end, last = reach(repo, b["archive"]["start"], wal, cache)
            chosen = (repo, float(b["timestamp"]["stop"]), end, last)
    spans = "; ".join(f"repo{r} {when(a)} to {when(e) if e else when(a)}" for r, a, e, _ in ranges)
    first = min(float(b["timestamp"]["stop"]) for b in done)
    if chosen is None:
        fail(f"{to} is before the oldest backup's end ({when(first)}); reachable: {spans}")
    repo, stop, end, last = chosen
    # HEROES_PITR_ARCHIVE_GROWS: the server still runs and restore.sh archives its current WAL
    # before the last check; only that one may judge the end of the archive.
    if (end is None or target > end) and not os.environ.get("HEROES_PITR_ARCHIVE_GROWS"):
        fail(f"{to} is past what the archive reaches from the backup of {when(stop)} in repo{repo}"
             f" (WAL up to {last}, last commit {when(end) if end else 'none'}: the end of the"
             f" archive or a gap); reachable: {spans}")  # fmt: skip
    return stanza


def restore(to: str | None, force: bool, target: float | None) -> None:
    check_restore(to, force, target)
    args = ["restore"]
    if force:
        args.append("--delta")  # overwrite in place: only files that differ are copied
    if to is not None:
        # Stop before the first transaction committed after `to`, then open for writes.
        args += ["--type=time", f"--target={to}", "--target-action=promote"]
    # Without a target, PostgreSQL replays to the end of the archive and promotes by itself.
    t0 = time.monotonic()
    proc = subprocess.run(["pgbackrest", *args], text=True, check=False)
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    # The entrypoint only fixes the mode of a directory it creates.
    PGDATA.chmod(0o700)
    print(f"pgbackrest restore done in {time.monotonic() - t0:.1f}s"
          f" ({'to ' + to if to else 'to the end of the archive'})", flush=True)  # fmt: skip


def main(argv: list[str]) -> None:
    command = argv[0] if argv else ""
    if command == "run":
        if (
            os.environ.get("ENVIRONMENT") == "production"
            and len(repos()) == 1
            and os.environ.get("HEROES_BACKUP_SINGLE_HOST") != "accept"
        ):
            fail("production keeps backups off this host: set PGBACKREST_REPO2_TYPE=s3 and the"
                 " PGBACKREST_REPO2_* settings (docs/backups.md), or HEROES_BACKUP_SINGLE_HOST"
                 "=accept to keep them on this host only")  # fmt: skip
        agent = Agent()
        agent.serve()
        agent.schedule()
    elif command == "health":
        health()
    elif command in ("check-restore", "restore"):
        to, force = restore_args(argv[1:])
        target = float(os.environ["HEROES_PITR_TARGET_EPOCH"]) if to is not None else None
        (check_restore if command == "check-restore" else restore)(to, force, target)
    else:
        fail("usage: pgbackrest-agent run|health|check-restore [--to T] [--force]|restore ...")


if __name__ == "__main__":
    main(sys.argv[1:])
