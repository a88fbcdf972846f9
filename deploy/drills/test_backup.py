"""Drill 13: back up under writes, lose the volume, restore (deploy/scripts/backup.sh, restore.sh).

On the drills stack (its own project name and two compose files, handed to the scripts only as
COMPOSE_PROJECT_NAME and COMPOSE_FILE): 300 heroes with non-ASCII names and secret names, then
backup.sh while a writer keeps adding heroes, `down -v`, `up --wait`, restore.sh. Pass: every row
present before the backup began, and every write acknowledged before it began, is back byte for
byte (table rows and API bodies); the next POST gets an id above every restored one; readiness is
200; no password in any process's command line while backup.sh ran. Also: a corrupted archive
and a non-empty database are refused with one line and change nothing; the `backup` profile on a
2 s interval with HEROES_BACKUP_KEEP=2 writes archives, prunes the oldest, and turns unhealthy
when a run fails (then healthy again).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drills.client import Connection, Outcome, request_once, split_url
from drills.common import Context, DrillResult, LoadRun, expect_answers, wait_for
from drills.stack import DrillError, Stack, log

TITLE = "Backup under writes, down -v, restore; corrupted archive refused; scheduled backups"
HEROES = 300
# Accents (precomposed and combining), Cyrillic, CJK, Arabic (RTL), emoji with ZWJ, symbols.
NAMES = (
    "Zoë",
    "Ærøskøbing",
    "Дэдпул",
    "孫悟空",
    "بطل",
    "🦸\u200d♀️ Wonder",
    "e\u0301clair",
    "Ω≈ç√∫",
)
SCHEDULE = {"HEROES_BACKUP_INTERVAL": "2", "HEROES_BACKUP_KEEP": "2"}


def _env(stack: Stack, extra: dict[str, str]) -> dict[str, str]:
    """What the scripts get: the stack's project and files the way `docker compose` reads them."""
    return {
        **stack.env,
        "COMPOSE_PROJECT_NAME": stack.project,
        "COMPOSE_FILE": os.pathsep.join(stack.files),
        **extra,
    }


def _run(
    stack: Stack, cmd: list[str], extra: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    proc = subprocess.run(
        cmd, cwd=stack.root, env=_env(stack, extra or {}), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def _rows(stack: Stack) -> dict[int, str]:
    """Every hero row as PostgreSQL's own JSON text (all columns, exact characters)."""
    out = stack.psql("SELECT id, row_to_json(h)::text FROM hero h ORDER BY id")
    return {int(i): text for i, _, text in (line.partition("|") for line in out)}


def _fingerprint(stack: Stack) -> str:
    return hashlib.sha256("\n".join(_rows(stack).values()).encode()).hexdigest()


def _write_heroes(url: str, token: str, prefix: str) -> dict[int, bytes]:
    """POST the heroes, then GET each: {id: the GET body's bytes}."""
    host, port = split_url(url)
    conn = Connection(host, port, timeout=10)
    auth = {"Authorization": f"Bearer {token}"}
    bodies: dict[int, bytes] = {}
    try:
        for i in range(HEROES):
            word = NAMES[i % len(NAMES)]
            hero = {"name": f"{prefix}-{i} {word}", "secret_name": f"{word} №{i}", "age": i % 97}
            created = conn.request("POST", "/heroes/", hero, auth)
            if created.outcome is not Outcome.OK:
                raise DrillError(f"POST hero {i}: {created.status} {created.body[:200]!r}")
            hero_id = int(created.json()["id"])
            bodies[hero_id] = _get(conn, hero_id)
    finally:
        conn.close()
    return bodies


def _get(conn: Connection, hero_id: int) -> bytes:
    got = conn.request("GET", f"/heroes/{hero_id}")
    if got.outcome is not Outcome.OK:
        raise DrillError(f"GET hero {hero_id}: {got.status}")
    return got.body


class _PsWatch:
    """Samples every process's command line on this host (containers included) while a command
    runs: did pg_dump show up, and did the password?"""

    def __init__(self, secret: str) -> None:
        self.secret, self.samples, self.saw_pg_dump = secret.encode(), 0, False
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = Path(entry.path, "cmdline").read_bytes()
                except OSError:
                    continue
                self.saw_pg_dump |= b"pg_dump" in cmdline
                if self.secret in cmdline:
                    self.leaks.append(cmdline.replace(b"\0", b" ")[:80].decode(errors="replace"))
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self) -> _PsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _one_line_refusal(rc: int, err: str, what: str, result: DrillResult) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    result.expect(rc == 1, f"{what}: restore.sh exited {rc}, want 1")
    result.expect(len(lines) == 1, f"{what}: want one line on stderr, got {lines[:5]}")
    return lines[0] if lines else ""


def _unchanged(stack: Stack, before: tuple[str, str, str], result: DrillResult, what: str) -> None:
    api = stack.inspect(stack.container("api"))
    now = (_fingerprint(stack), api["Id"], api["State"]["StartedAt"])
    result.expect(now == before, f"{what}: the database or the api changed ({before} -> {now})")


def _scheduled(ctx: Context, workdir: Path, result: DrillResult) -> None:
    stack = ctx.stack
    target = workdir / "scheduled"
    target.mkdir()
    # The service's default user is the image's postgres (999), which must own the directory; a
    # non-root CI runner cannot chown, so there the service runs as the runner's uid instead.
    if os.geteuid() == 0:
        os.chown(target, 999, 999)
        user = "999:999"
    else:
        user = f"{os.getuid()}:{os.getgid()}"
    env = {
        "HEROES_BACKUP_DIR": str(target), "HEROES_BACKUP_USER": user,
        "HEROES_BACKUP_HEALTH_INTERVAL": "1s", **SCHEDULE,
    }  # fmt: skip
    profile = [*stack.compose_cmd("--profile", "backup")]
    since = time.time()
    rc, _, err = _run(
        stack, [*profile, "up", "-d", "--wait", "--wait-timeout", "60", "backup"], env
    )
    if rc != 0:
        raise DrillError(f"--profile backup up backup exited {rc}: {err.strip()[-500:]}")
    cid = _run(stack, [*profile, "ps", "-q", "backup"], env)[1].strip()

    def events() -> list[dict[str, Any]]:
        proc = stack.docker("logs", "--since", f"{since - 1:.0f}", cid)
        found = []
        for line in (proc.stdout + proc.stderr).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("logger") == "heroes.backup" and "status" in event:
                found.append(event)
        return found

    def health() -> str:
        return str(stack.inspect(cid)["State"]["Health"]["Status"])

    keep = int(SCHEDULE["HEROES_BACKUP_KEEP"])
    pruning = wait_for(lambda: sum(1 for e in events() if e.get("pruned")) >= 2, timeout=30)
    runs = events()
    archives = sorted(target.glob("heroes-*.dump"))
    ok_runs = [e for e in runs if e["status"] == "ok"]
    pruned = [name for e in runs for name in e.get("pruned", [])]
    result.expect(pruning is not None, f"no pruning within 30 s: {runs}")
    result.expect(len(ok_runs) >= keep + 1, f"{len(ok_runs)} scheduled archives, want > {keep}")
    result.expect(len(archives) == keep, f"{len(archives)} archives kept, want {keep}")
    for archive in archives:
        checksum = archive.with_name(archive.name + ".sha256").read_text().split()[0]
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        result.expect(checksum == digest, f"{archive.name}: checksum file does not match")
    result.expect(not any((target / n).exists() for n in pruned), "a pruned archive is still there")
    lines = [ln for ln in stack.docker("logs", cid).stderr.splitlines() if ln.strip()]
    result.expect(all(ln.startswith("{") for ln in lines), f"non-JSON log lines: {lines[:3]}")

    # A failing run must show: the directory turns unwritable, then writable again.
    # The posture of the other services: read-only, no capabilities, no new privileges, limits.
    host = stack.inspect(cid)["HostConfig"]
    posture = (
        stack.inspect(cid)["Config"]["User"], host["ReadonlyRootfs"], host["CapDrop"],
        host["SecurityOpt"], host["Memory"] > 0, host["PidsLimit"],
    )  # fmt: skip
    want = (user, True, ["ALL"], ["no-new-privileges:true"], True, 64)
    result.expect(posture == want, f"backup service posture {posture}, want {want}")

    # A failing run must show: the directory turns unwritable (for its owner), then writable.
    target.chmod(0o500)
    failed_after = wait_for(lambda: health() == "unhealthy", timeout=15)
    failures = [e for e in events() if e["status"] == "failed"]
    target.chmod(0o700)
    healthy_after = wait_for(lambda: health() == "healthy", timeout=15)
    result.expect(failed_after is not None, "the service stayed healthy after a failed run")
    result.expect(bool(failures), "no JSON line with status failed for the failed run")
    result.expect(healthy_after is not None, "the service did not recover after a good run")
    _run(stack, [*profile, "rm", "-s", "-f", "backup"], env)
    result.figures.update(
        scheduled_runs=len(ok_runs), scheduled_kept=len(archives), scheduled_pruned=len(pruned),
        unhealthy_after_s=failed_after, failure_reason=failures[0]["error"] if failures else None,
    )  # fmt: skip


@pytest.mark.drill(13, TITLE, stage="replaces-data", services=("api", "db", "migrate"))
def test_backup_restore(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d13-{ctx.run_id}"
    workdir = Path(tempfile.mkdtemp(prefix="heroes-backup-drill-"))
    archives = workdir / "archives"
    backup_env = {"HEROES_BACKUP_DIR": str(archives), "HEROES_BACKUP_KEEP": "3"}
    try:
        url = ctx.refresh_url()
        log(f"drill 13: {HEROES} heroes with non-ASCII names")
        bodies = _write_heroes(url, stack.tokens()[0], prefix)

        log("drill 13: backup.sh while a writer adds heroes")
        # Writes only: every row present before the backup must come back unchanged.
        load = stack.start_load(f"{prefix}-w", clients=4, max_seconds=60, ops=("POST",))
        load.wait_started()
        expect_answers(result, load, 20, "before the backup")  # 5 writes per writer
        rows_before = _rows(stack)
        secret = (stack.root / "deploy/secrets/dev-db-password.txt").read_text().strip()
        began = time.time()
        with _PsWatch(secret) as ps:
            rc, out, err = _run(stack, ["deploy/scripts/backup.sh"], backup_env)
        backup_s = time.time() - began
        expect_answers(result, load, 4, "after the backup")  # a write per writer
        writes = LoadRun(load.stop())
        if rc != 0:
            raise DrillError(f"backup.sh exited {rc}: {err.strip()[-1000:]}")
        archive = Path(out.strip().splitlines()[-1])
        archive_bytes = archive.stat().st_size
        acked_before = {r.name for r in writes.of(Outcome.OK) if r.ended < began}
        result.expect(archive.parent == archives.resolve(), f"archive {archive} not in {archives}")
        result.expect(archive.is_file(), f"backup.sh printed {archive}, which does not exist")
        sha = archive.with_name(archive.name + ".sha256").read_text().split()[0]
        result.expect(sha == hashlib.sha256(archive.read_bytes()).hexdigest(), "checksum differs")
        result.expect(archive.stat().st_mode & 0o077 == 0, "archive readable by group or others")
        leftovers = [p.name for p in archives.iterdir() if p.name.startswith(".")]
        result.expect(not leftovers, f"temporary files left: {leftovers}")
        result.expect(ps.saw_pg_dump, f"pg_dump never seen in {ps.samples} process samples")
        result.expect(not ps.leaks, f"the password is on a command line: {ps.leaks}")

        log("drill 13: a corrupted archive and a non-empty database are refused")
        api = stack.inspect(stack.container("api"))
        before = (_fingerprint(stack), api["Id"], api["State"]["StartedAt"])
        corrupt = workdir / "corrupt" / archive.name
        corrupt.parent.mkdir()
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0xFF
        corrupt.write_bytes(bytes(data))
        shutil.copy(archive.with_name(archive.name + ".sha256"), corrupt.parent)
        rc, _, err = _run(stack, ["deploy/scripts/restore.sh", "--force", str(corrupt)])
        corrupt_line = _one_line_refusal(rc, err, "corrupted archive", result)
        result.expect("checksum mismatch" in corrupt_line, f"refusal says {corrupt_line!r}")
        _unchanged(stack, before, result, "corrupted archive")
        rc, _, err = _run(stack, ["deploy/scripts/restore.sh", str(archive)])
        full_line = _one_line_refusal(rc, err, "non-empty database", result)
        result.expect("not empty" in full_line, f"refusal says {full_line!r}")
        _unchanged(stack, before, result, "non-empty database")

        log("drill 13: docker compose down -v, up -d --wait, restore.sh")
        stack.compose("down", "-v", "--timeout", "40")
        t0 = time.monotonic()
        stack.compose("up", "-d", "--wait", "--wait-timeout", "180")
        up_s = time.monotonic() - t0
        result.expect(_rows(stack) == {}, "the new volume is not empty")
        t0 = time.monotonic()
        rc, out, err = _run(stack, ["deploy/scripts/restore.sh", str(archive)], timeout=300)
        restore_s = time.monotonic() - t0
        if rc != 0:
            raise DrillError(f"restore.sh exited {rc}: {(out + err).strip()[-1500:]}")
        print(out.strip(), flush=True)
        url = ctx.refresh_url()
        ready = request_once(url, "GET", "/health/ready", timeout=5)
        result.expect(ready.status == 200, f"readiness {ready.status} after the restore")

        rows_after = _rows(stack)
        changed = [i for i, text in rows_before.items() if rows_after.get(i) != text]
        result.expect(not changed, f"{len(changed)} rows not restored byte for byte: {changed[:5]}")
        names = set(stack.psql(f"SELECT name FROM hero WHERE name LIKE '{prefix}-w-%'"))  # noqa: S608
        lost = acked_before - names
        result.expect(not lost, f"{len(lost)} writes acknowledged before the backup lost")
        host, port = split_url(url)
        conn = Connection(host, port, timeout=10)
        try:
            differ = [i for i, body in bodies.items() if _get(conn, i) != body]
        finally:
            conn.close()
        result.expect(
            not differ, f"{len(differ)} GET bodies differ after the restore: {differ[:5]}"
        )
        auth = {"Authorization": f"Bearer {stack.tokens()[0]}"}
        new = request_once(
            url, "POST", "/heroes/", {"name": f"{prefix}-new", "secret_name": "n"}, auth
        )
        new_id = int(new.json()["id"]) if new.outcome is Outcome.OK else -1
        top = max(rows_after)
        result.expect(new_id > top, f"next POST got id {new_id}, not above {top}")

        log("drill 13: scheduled backups (profile backup, 2 s interval, keep 2)")
        _scheduled(ctx, workdir, result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    during = {r.name for r in writes.of(Outcome.OK)} - acked_before
    result.figures.update(
        heroes=HEROES, rows_before=len(rows_before), rows_restored=len(rows_after),
        acked_before_backup=len(acked_before), acked_during=len(during),
        during_in_archive=len(during & names), archive_bytes=archive_bytes,
        backup_s=round(backup_s, 2), down_up_s=round(up_s, 1),
        restore_s=round(restore_s, 1), next_id=new_id, max_restored_id=top,
        ps_samples=ps.samples, corrupt_refusal=corrupt_line,
    )  # fmt: skip
    f = result.figures
    result.summary = (
        f"{HEROES} heroes written, then backup.sh under writes; after down -v + restore.sh all "
        f"{len(rows_before)} rows present before it and all {f['acked_before_backup']} writes "
        f"acked before it are back byte for byte ({f['acked_during']} acked during it, "
        f"{f['during_in_archive']} of them in the archive); archive "
        f"{f['archive_bytes']} B; backup.sh {backup_s:.1f}s, restore.sh {restore_s:.1f}s "
        f"(stop api, restore, migrate, ready); next id {new_id} > {top}; corrupted archive "
        f"refused; scheduled: {f['scheduled_runs']} archives, {f['scheduled_pruned']} pruned, "
        f"kept {f['scheduled_kept']}, unhealthy {f['unhealthy_after_s'] or 0:.1f}s after a "
        "failed run"
    )
