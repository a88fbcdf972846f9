"""The pgBackRest stack as the restore drills (20-22, 39-41) drive it: the backup exporter's
metrics and the archiver's state, 8 writers through the proxy, the database lost, ``restore.sh``
run (docs/backups.md)."""

from __future__ import annotations

import time

from drills.common import Context, user_script
from drills.stack import DrillError, NetworkLoad, Stack

WRITERS = 8
SERVICES = ("db", "pgbackrest", "api")
METRICS = (
    "import urllib.request as r; "
    "print(r.urlopen('http://pgbackrest-exporter:9854/metrics', timeout=20).read().decode())"
)
WAL_SEGMENT = 16 * 1024 * 1024
# What the WAL alerts read (pg_stat_archiver, as the postgres-exporter exports it) and the
# segments waiting in pg_wal/archive_status, asked of the server itself: the drills run without
# the monitoring profile.
ARCHIVER = (
    "SELECT extract(epoch FROM coalesce(last_archived_time, 'epoch')),"
    " extract(epoch FROM coalesce(last_failed_time, 'epoch')),"
    " (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')"
    " FROM pg_stat_archiver"
)


def metrics(stack: Stack) -> dict[str, float]:
    """The backup exporter's series (name with labels -> value), fetched by an api container
    over the compose network."""
    text = stack.exec_python("api", METRICS, timeout=40)
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


def wal(stack: Stack) -> dict[str, float]:
    """The archiver's state: last archived and failed (epoch s), failing (1 when the last
    attempt failed), segments and bytes waiting."""
    archived, failed, pending = (float(v) for v in stack.psql(ARCHIVER)[0].split("|"))
    return {
        "last_archived": archived, "last_failed": failed, "failing": float(failed > archived),
        "pending_segments": pending, "pending_bytes": pending * WAL_SEGMENT,
    }  # fmt: skip


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
    time.sleep(1.0)  # the writers past the loss: nothing succeeds to wait for
    return lost_at, volume


def remove_data(stack: Stack, volume: str) -> None:
    """The data volume removed (the pgbackrest service mounts it too: removed first)."""
    stack.compose("rm", "-s", "-f", "pgbackrest")
    stack.docker("volume", "rm", volume)
