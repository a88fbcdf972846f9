"""Drill 38: the host is gone; the stack comes back from the off-host repository alone
(pgBackRest repo2 on S3, encrypted; deploy/scripts/s3-standin.sh, restore.sh --latest;
docs/backups.md, "A new host").

The S3 stand-in runs as a compose project of its own (a remote store). A stack with its printed
settings serves 8 keyed writers (Idempotency-Key) through the proxy, every acknowledged write noted
with its time. Then the host goes: the database is killed (SIGKILL, no shutdown, no last archive)
and the whole stack removed with its volumes (``down -v``: data and local repository). A stack
under another project name, with fresh volumes and the same settings and passphrase, runs
``restore.sh --latest`` before anything else. Pass: no acknowledged write missing except those
acknowledged within the last archive_timeout before the loss; none stored twice; a retry of a
restored key is answered from the stored answer (Idempotent-Replayed: true, the same id);
readiness 200 through the proxy. Figures: missing writes and their window, RTO (restore.sh to
readiness), the repository the restore came from.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from drills.client import Outcome, request_once
from drills.common import Context, DrillResult, stored_counts, user_script
from drills.offsite import ARCHIVE_TIMEOUT, host_stack, s3_standin
from drills.stack import DrillError, NetworkLoad, Stack, log

TITLE_HOST_GONE = "The host is gone: a new stack restores from the off-host repository alone"
WRITERS = 8


def keyed_writers(stack: Stack, prefix: str, seconds: float) -> NetworkLoad:
    cmd = [
        sys.executable, "-m", "drills.keyed_load", "--url", stack.url(),
        "--clients", str(WRITERS), "--prefix", prefix,
        "--token-file", str(stack.tokens_file), "--max-seconds", str(seconds),
        "--retry-for", "5",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(stack.root / "deploy")}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    load = NetworkLoad(f"keyed-load-{prefix}", proc)
    load.wait_started()
    return load


def acknowledged(data: dict[str, Any]) -> dict[str, float]:
    """key -> when its write was acknowledged (wall clock)."""
    out: dict[str, float] = {}
    for key, outcome, _status, _replayed, sent, latency in data["attempts"]:
        if outcome == "2xx":
            out[key] = float(sent) + float(latency)
    return out


@pytest.mark.drill(38, TITLE_HOST_GONE, stage="own-stack", services=("db", "pgbackrest"))
def test_host_gone(drill_context: Context, result: DrillResult) -> None:
    # Stacks of its own only: the shared stack is paused if it runs, never started for this.
    ctx = drill_context
    base = ctx.stack
    prefix = f"d38-{ctx.run_id}"
    base.compose("pause", check=False)
    stacks: list[Stack] = []
    try:
        with s3_standin(ctx) as settings:
            stacks = [host_stack(ctx, name, settings) for name in ("host1", "host2")]
            for stack in stacks:
                stack.compose("down", "-v", "--remove-orphans", check=False)
            log("drill 38: first host up (full backups to both repositories before healthy)")
            stacks[0].compose("up", "-d", "--wait", "--wait-timeout", "400", timeout=500)
            _drill(result, stacks[0], stacks[1], prefix)
    finally:
        for stack in stacks:
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
        base.compose("unpause", check=False)


def _wrong_passphrase(new: Stack) -> dict[str, Any]:
    """restore.sh on the new host with another passphrase: one line on stderr, exit 1, nothing
    left running (and the real restore after it finds the data volume as untouched as before)."""
    with tempfile.TemporaryDirectory() as tmp:
        wrong = Path(tmp) / "cipher-pass"
        wrong.write_text("not-the-passphrase\n")
        wrong.chmod(0o644)  # the containers' user reads it through the bind mount
        proc = user_script(
            new, "restore.sh", "--latest", timeout=300, HEROES_BACKUP_CIPHER_PASS_FILE=str(wrong)
        )
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    running = new.compose("ps", "-q", check=False).stdout.split()
    return {
        "exit": proc.returncode,
        "stderr_lines": len(lines),
        "said": lines[-1][:300] if lines else "",
        "changed": running,
    }


def _drill(result: DrillResult, old: Stack, new: Stack, prefix: str) -> None:
    load = keyed_writers(old, prefix, seconds=ARCHIVE_TIMEOUT * 3 + 60)
    try:
        time.sleep(ARCHIVE_TIMEOUT * 2 + 5)  # archive_timeout's timer: two segments by time
        lost_at = time.time()
        old.docker("kill", "-s", "KILL", old.container("db"))
        time.sleep(1.0)  # the writers past the loss: nothing succeeds to wait for
    finally:
        data = load.stop()
    log("drill 38: database killed; the first host's stack removed with its volumes")
    old.compose("down", "-v", "--remove-orphans", "--timeout", "10")

    log("drill 38: a new host: restore.sh --latest with a wrong passphrase first")
    refused = _wrong_passphrase(new)
    result.expect(
        refused["exit"] == 1
        and refused["stderr_lines"] == 1
        and "passphrase" in refused["said"]
        and refused["said"].isprintable()
        and not refused["changed"],
        f"wrong passphrase: exit {refused['exit']}, {refused['stderr_lines']} stderr lines, "
        f"left behind {refused['changed']}: {refused['said']!r}",
    )
    result.figures["wrong_passphrase"] = refused

    log("drill 38: a new host: restore.sh --latest before anything else")
    t0 = time.monotonic()
    proc = user_script(new, "restore.sh", "--latest", timeout=900)
    restore_s = time.monotonic() - t0
    if proc.returncode != 0:
        raise DrillError(f"restore.sh --latest exited {proc.returncode}: "
                         f"{(proc.stdout + proc.stderr).strip()[-1500:]}")  # fmt: skip
    url = new.url()
    ready = request_once(url, "GET", "/health/ready", timeout=5)
    rto = time.monotonic() - t0
    from_repo = [ln.split("INFO: ")[-1] for ln in proc.stdout.splitlines() if "backup set" in ln]

    acked = acknowledged(data)
    stored = stored_counts(new, prefix)
    missing = {k: lost_at - t for k, t in acked.items() if k not in stored}
    twice = {k: n for k, n in stored.items() if n > 1}
    window = max(missing.values(), default=0.0)
    # A retry of a restored write: the stored answer, not a new hero.
    key = max((k for k in acked if k in stored), key=lambda k: acked[k], default="")
    seq = int(key.rsplit("-", 1)[1]) if key else 0
    auth = {"Authorization": f"Bearer {new.tokens()[0]}", "Idempotency-Key": key}
    body = {"name": key, "secret_name": f"s-{key}", "age": seq % 100}
    retry = request_once(url, "POST", "/heroes/", body, auth, timeout=10)
    replayed = retry.headers.get("idempotent-replayed") == "true"
    after = stored_counts(new, prefix).get(key, 0)

    result.expect(len(acked) > 100, f"only {len(acked)} writes acknowledged before the loss")
    result.expect(
        window <= ARCHIVE_TIMEOUT + 5,
        f"{len(missing)} acknowledged writes missing, the oldest acknowledged {window:.1f}s "
        f"before the loss (archive_timeout {ARCHIVE_TIMEOUT}s)",
    )
    result.expect(not twice, f"{len(twice)} heroes stored twice: {sorted(twice)[:5]}")
    result.expect(ready.status == 200, f"readiness {ready.status} after the restore")
    result.expect(bool(key), "no acknowledged write was restored")
    result.expect(
        retry.outcome is Outcome.OK and replayed and after == 1,
        f"retry of {key}: {retry.status}, replayed {replayed}, stored {after}x",
    )
    result.figures.update(
        writers=WRITERS, acked=len(acked), missing=len(missing), window_s=round(window, 1),
        written_twice=len(twice), archive_timeout_s=ARCHIVE_TIMEOUT,
        retry_replayed=replayed, restore_s=round(restore_s, 1), rto_s=round(rto, 1),
        restore_lines=from_repo,
    )  # fmt: skip
    f = result.figures
    result.summary = (
        f"{f['acked']} keyed writes acknowledged by {WRITERS} writers, then the host's database "
        f"killed and its stack removed with every volume; a new stack (fresh volumes, same "
        f"settings and passphrase) restored from the off-host repository: {f['missing']} "
        f"acknowledged writes missing, all within the last {f['window_s']}s (archive_timeout "
        f"{ARCHIVE_TIMEOUT}s), {f['written_twice']} written twice, a retried key replayed: "
        f"{replayed}; RTO {f['rto_s']}s (restore.sh --latest to readiness through the proxy); "
        f"with a wrong passphrase first: exit {refused['exit']}, one line "
        f"({refused['said'][:120]!r}), nothing started"
    )
