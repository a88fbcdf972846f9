#!/usr/bin/env python3
"""The checks and steps of a point-in-time restore, run by deploy/scripts/restore.sh in a one-off
db container as the postgres user (docs/backups.md). Standard library only.

    heroes-pitr-restore check-restore [--to T] [--force]   may a restore run now? (changes nothing)
    heroes-pitr-restore restore [--to T] [--force]         pgbackrest restore into the data volume

pgBackRest picks the backup and replays WAL itself; what it cannot tell before it starts is
whether the archive reaches the target without a gap, so that is checked here (pg_waldump on the
last segments) and a target out of reach is refused with one line, before anything is stopped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

PGDATA = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data"))


def repos() -> list[int]:
    """The repositories: 1 (local), and 2 (off-host) when PGBACKREST_REPO2_TYPE defines it."""
    return [1, 2] if os.environ.get("PGBACKREST_REPO2_TYPE") else [1]


def timeline(segment: str) -> int:
    """The timeline of a WAL segment name (its first 8 hex digits)."""
    return int(segment[:8], 16)


def fail(message: str) -> NoReturn:
    """A refusal or a usage error: one line on stderr, exit 1."""
    print(f"heroes-pitr-restore: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def pgbackrest(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    # errors="replace": a repository read with the wrong passphrase puts undecrypted bytes in
    # pgBackRest's messages.
    return subprocess.run(
        ["pgbackrest", *args], capture_output=True, text=True, errors="replace",
        timeout=timeout, check=False,
    )  # fmt: skip


def readable(text: str) -> str:
    """One line of printable text, at most 200 characters, for a message an operator reads."""
    return "".join(c for c in text if c.isprintable() and c != "\ufffd")[:200]


def last_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln] or lines
    return readable(errors[-1]) if errors else f"exit {proc.returncode}"


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


def repo_errors(stanza: dict[str, Any]) -> dict[int, str]:
    """Repositories `pgbackrest info` could not read, with its message (a missing stanza is not
    an error here: a new repository, or a new host's empty local one)."""
    return {
        int(r["key"]): str(r["status"].get("message", ""))
        for r in stanza.get("repo", [])
        if r.get("status", {}).get("code", 0) not in (0, 1, 2)
    }


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
    except (RuntimeError, ValueError) as exc:  # ValueError: not JSON
        fail(
            "cannot read the pgBackRest repositories (unreachable, or a wrong passphrase: "
            f"HEROES_BACKUP_CIPHER_PASS_FILE): {readable(str(exc))}"
        )
    for repo, message in repo_errors(stanza).items():
        fail(
            f"repository {repo} cannot be read (unreachable, or a wrong passphrase: "
            f"HEROES_BACKUP_CIPHER_PASS_FILE): {readable(message)}"
        )
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
    if command not in ("check-restore", "restore"):
        fail("usage: heroes-pitr-restore check-restore|restore [--to T] [--force]")
    to, force = restore_args(argv[1:])
    target = float(os.environ["HEROES_PITR_TARGET_EPOCH"]) if to is not None else None
    (check_restore if command == "check-restore" else restore)(to, force, target)


if __name__ == "__main__":
    main(sys.argv[1:])
