"""A throw-away PostgreSQL cluster for one benchmark run.

PostgreSQL refuses to run as root, so when we are root every server binary runs as the ``postgres``
user through ``setpriv``. The cluster lives in a directory under the run's work dir, listens on
127.0.0.1 only, trusts local connections and runs with durability off (fsync, synchronous_commit,
full_page_writes): the same for every app under test, and the database is discarded at the end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from bench.procs import ProcessRegistry, free_port

DEFAULT_BINDIR = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))

# Same for every app: durability off (a benchmark database), enough connections for
# 3 apps x 2 workers x 15 pooled connections even if an old server is still draining.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "log_min_messages": "warning",
    "autovacuum": "on",
}

SEED_SQL = """
INSERT INTO hero (name, secret_name, age)
SELECT 'Hero ' || g, 'Secret identity ' || g, CASE WHEN g %% 10 = 0 THEN NULL ELSE 18 + g %% 60 END
FROM generate_series(1, %(count)s) AS g
"""


class PostgresCluster:
    """initdb + postgres as a child process; ``stop()`` shuts it down and deletes the data."""

    def __init__(self, root: Path, registry: ProcessRegistry, bindir: Path = DEFAULT_BINDIR):
        self.root = root / "postgres"
        self.datadir = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.bindir = bindir
        self.registry = registry
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_postgres(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", *argv]

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(mode=0o700)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        subprocess.run(
            self._as_postgres(
                [
                    str(self.bindir / "initdb"),
                    "--pgdata",
                    str(self.datadir),
                    "--username",
                    "postgres",
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=self.root,
        )
        self.port = free_port()
        argv = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        argv += ["-c", f"unix_socket_directories={self.root}"]
        for key, value in SERVER_SETTINGS.items():
            argv += ["-c", f"{key}={value}"]
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                self._as_postgres(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        self.registry.add("postgres", self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited early; see {self.logfile}:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def pid(self) -> int:
        """The postmaster's pid (PostgreSQL's CPU time is read from it and its children)."""
        if self.proc is None:
            raise RuntimeError("PostgreSQL is not running")
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def url(self, dbname: str, driver: str = "postgresql") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{dbname}"

    def version(self) -> str:
        with psycopg.connect(self.url("postgres")) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def sessions(self, dbname: str) -> int:
        """Connections ever established to ``dbname`` (pg_stat_database.sessions, PostgreSQL 14+);
        asked from the ``postgres`` database, so the asking is not counted."""
        with psycopg.connect(self.url("postgres")) as conn:
            row = conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", (dbname,)
            ).fetchone()
        return int(row[0]) if row else 0

    def recreate_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    def seed(self, dbname: str, count: int) -> None:
        """Insert ``count`` heroes with ids 1..count, then VACUUM ANALYZE so plans and
        visibility maps are the same for every app and autovacuum does not start mid-run."""
        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            existing = conn.execute("SELECT count(*) FROM hero").fetchone()
            if existing is None or existing[0] != 0:
                raise RuntimeError(f"table hero in {dbname} is not empty before seeding")
            conn.execute(SEED_SQL, {"count": count})
            conn.execute("VACUUM ANALYZE hero")
            conn.execute("CHECKPOINT")
            top = conn.execute("SELECT min(id), max(id) FROM hero").fetchone()
        if top != (1, count):
            raise RuntimeError(f"seeded ids are {top}, expected (1, {count})")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.registry.remove("postgres")
        shutil.rmtree(self.root, ignore_errors=True)
