"""A stack of a drill's own, backed up to an S3 stand-in run as a remote store of its own
(deploy/scripts/s3-standin.sh): the off-host drills (38, 40, 41; docs/backups.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from drills.common import Context
from drills.stack import DrillError, Stack

#: Short, so the drill stays short; the allowed loss window is measured against it.
ARCHIVE_TIMEOUT = 20


@contextmanager
def s3_standin(ctx: Context) -> Iterator[dict[str, str]]:
    """deploy/scripts/s3-standin.sh up as a project of its own; its KEY=VALUE settings."""
    directory = Path(tempfile.mkdtemp(prefix="heroes-s3-"))
    env = {
        **os.environ,
        "S3_STANDIN_PROJECT": f"{ctx.stack.project}-s3",
        "S3_STANDIN_DIR": str(directory / "standin"),
        "S3_STANDIN_IMAGE": os.environ.get("S3_STANDIN_IMAGE", "heroes-s3-standin:local"),
    }
    script = str(ctx.stack.root / "deploy" / "scripts" / "s3-standin.sh")
    try:
        proc = subprocess.run(
            [script, "up"], cwd=ctx.stack.root, env=env, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise DrillError(f"s3-standin.sh up exited {proc.returncode}: {proc.stderr[-1500:]}")
        settings = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        yield settings
    finally:
        subprocess.run([script, "down"], cwd=ctx.stack.root, env=env, capture_output=True,
                       timeout=120, check=False)  # fmt: skip
        shutil.rmtree(directory, ignore_errors=True)


def host_stack(ctx: Context, name: str, settings: dict[str, str]) -> Stack:
    return Stack(
        root=ctx.stack.root, project=f"{ctx.stack.project}-{name}", image=ctx.stack.image,
        tokens_file=ctx.stack.tokens_file, files=ctx.stack.files,
        # The shared stack's proxy settings (no rate limits, a long queue): these drills count
        # failed writes, and the 2 cores are an overload for 8 writers beside two stacks.
        extra_env={**ctx.stack.extra_env, **settings,
                   "HEROES_PITR_ARCHIVE_TIMEOUT": str(ARCHIVE_TIMEOUT)},
    )  # fmt: skip


@contextmanager
def standin_stack(ctx: Context, name: str) -> Iterator[Stack]:
    """A stack of the drill's own (up and healthy) backed up to a fresh S3 stand-in; the shared
    stack paused meanwhile (it shares the 2 cores), both removed afterwards."""
    ctx.stack.compose("pause", check=False)
    stack: Stack | None = None
    try:
        with s3_standin(ctx) as settings:
            stack = host_stack(ctx, name, settings)
            stack.compose("down", "-v", "--remove-orphans", check=False)
            stack.compose("up", "-d", "--wait", "--wait-timeout", "400", timeout=500)
            yield stack
    finally:
        if stack is not None:
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
        ctx.stack.compose("unpause", check=False)
