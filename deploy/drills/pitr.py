"""The pgBackRest stack as the restore drills (20-22, 39-41) drive it: the exporter's gauges, 8
writers through the proxy, the database lost, ``restore.sh`` run (docs/backups.md)."""

from __future__ import annotations

import time

from drills.common import Context, user_script
from drills.stack import DrillError, NetworkLoad, Stack

WRITERS = 8
SERVICES = ("db", "pgbackrest", "api")
METRICS = (
    "import urllib.request as r; "
    "print(r.urlopen('http://pgbackrest:9854/metrics', timeout=20).read().decode())"
)


def metrics(stack: Stack) -> dict[str, float]:
    """The exporter's gauges, fetched by an api container over the compose network."""
    text = stack.exec_python("api", METRICS, timeout=40)
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name and not name.startswith("#") and "{" not in name
    }


def health(stack: Stack) -> str:
    return str(stack.inspect(stack.container("pgbackrest"))["State"]["Health"]["Status"])


def archive_timeout(stack: Stack) -> int:
    value = stack.psql("SELECT setting FROM pg_settings WHERE name = 'archive_timeout'")[0]
    return int(value)  # seconds (the setting's unit is s)


def writers(ctx: Context, prefix: str, seconds: float) -> NetworkLoad:
    """8 clients POSTing heroes named <prefix>-<client>-<seq> through the proxy."""
    load = ctx.stack.start_load(
        prefix, ctx.refresh_url(), clients=WRITERS, max_seconds=seconds, ops=("POST",)
    )
    load.wait_started()
    return load


def restore(stack: Stack, *args: str) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = user_script(stack, "restore.sh", *args, timeout=600)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise DrillError(
            f"restore.sh {' '.join(args)} exited {proc.returncode}: "
            f"{(proc.stdout + proc.stderr).strip()[-1500:]}"
        )
    done = [ln for ln in proc.stdout.splitlines() if ln.startswith("restore.sh: done")]
    print(done[-1] if done else proc.stdout.strip()[-300:], flush=True)
    return seconds, done[-1] if done else ""


def kill_database(stack: Stack) -> tuple[float, str]:
    """The loss: the server dies (SIGKILL, no shutdown checkpoint, no last archive) and its
    container is removed. When it happened, and the data volume's name."""
    db = stack.container("db")
    volume = next(
        m["Name"] for m in stack.inspect(db)["Mounts"]
        if m["Destination"] == "/var/lib/postgresql/data"
    )  # fmt: skip
    lost_at = time.time()
    stack.docker("rm", "-f", db)
    time.sleep(1.0)
    return lost_at, volume


def remove_data(stack: Stack, volume: str) -> None:
    """The data volume removed (the pgbackrest service mounts it too: removed first)."""
    stack.compose("rm", "-s", "-f", "pgbackrest")
    stack.docker("volume", "rm", volume)
