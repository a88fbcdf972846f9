"""Drill 4: five migrate containers at once on an empty database.

``heroes migrate`` takes a PostgreSQL advisory lock around ``alembic upgrade head``. Pass: all five
exit 0, their runs really overlapped, alembic_version holds exactly one row (the image's head),
each migration step ran exactly once across the five logs, and the hero table exists once.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from drills.common import Context, DrillResult
from drills.stack import log

TITLE = "Concurrent migrations on an empty database"
RUNNERS = 5

HEAD = (
    "from heroes.config import Settings; from heroes.migrate import head_revision; "
    "print(head_revision(Settings(database_url='sqlite://')))"
)


@pytest.mark.drill(4, TITLE, stage="empty-database", services=("db",))
def test_concurrent_migrations(empty_database: Context, result: DrillResult) -> None:
    ctx = empty_database
    stack = ctx.stack
    ctx.head = stack.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", stack.image, "-c", HEAD
    ).stdout.strip()
    tables = stack.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    result.expect(not tables, f"database not empty before the drill: {tables}")

    log(f"drill 4: {RUNNERS} x docker compose run migrate, all at once")
    procs = []
    for _ in range(RUNNERS):
        cmd = stack.compose_cmd("run", "--rm", "--no-deps", "-T", "migrate")
        procs.append((time.time(), subprocess.Popen(
            cmd, cwd=stack.root, env=stack.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )))  # fmt: skip
    runs = []
    for started, proc in procs:
        out, _ = proc.communicate(timeout=180)
        runs.append((started, time.time(), proc.returncode, out))
    codes = [rc for _, _, rc, _ in runs]
    outputs = "\n".join(out for *_, out in runs)
    upgrades = [line for line in outputs.splitlines() if "Running upgrade" in line]
    versions = stack.psql("SELECT version_num FROM alembic_version")
    hero_tables = stack.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'hero'")
    steps = stack.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", stack.image, "-c",
        "from heroes.config import Settings; from heroes.migrate import alembic_config; "
        "from alembic.script import ScriptDirectory; "
        "print(len(list(ScriptDirectory.from_config(alembic_config("
        "Settings(database_url='sqlite://'))).walk_revisions())))",
    ).stdout.strip()  # fmt: skip
    overlap = max(s for s, *_ in runs) < min(e for _, e, *_ in runs)

    result.figures.update(
        runners=RUNNERS,
        exit_codes=codes,
        slowest_s=round(max(e - s for s, e, *_ in runs), 1),
        overlapped=overlap,
        head=ctx.head,
        alembic_version_rows=versions,
        upgrade_steps_logged=len(upgrades),
        steps_in_image=int(steps),
    )
    f = result.figures
    result.expect(all(rc == 0 for rc in codes), f"migrate exit codes {codes}")
    result.expect(overlap, "the five migrations did not run at the same time")
    result.expect(versions == [ctx.head], f"alembic_version is {versions}, want [{ctx.head}]")
    result.expect(
        len(upgrades) == int(steps),
        f"{len(upgrades)} 'Running upgrade' lines across the runners, want {steps} (once each)",
    )
    result.expect(hero_tables == ["1"], f"hero tables: {hero_tables}")
    if not result.passed:
        print(outputs)
    result.summary = (
        f"{RUNNERS} runners at once: exit codes {codes}, overlapped {overlap}, "
        f"schema at {versions} (head {ctx.head}), {len(upgrades)} upgrade step(s) run "
        f"for {steps} in the image, slowest {f['slowest_s']}s"
    )
