"""A throwaway PostgreSQL server from the local binaries (initdb + pg_ctl): in a temporary
directory, on 127.0.0.1 and a free port, trusting local connections, durability off (fsync,
synchronous_commit, full_page_writes: a database that is deleted afterwards), up to 200
connections. ``stop()`` deletes it.

PostgreSQL refuses to run as root, so as root every binary runs as the ``postgres`` user
(``setpriv``). PG_BINDIR names the binaries' directory; else ``pg_ctl`` on the PATH, else the
newest /usr/lib/postgresql/*/bin.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import psycopg

from harness.procs import ProcessRegistry, free_port

SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def bindir() -> Path:
    given = os.environ.get("PG_BINDIR")
    if given:
        return Path(given)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts)
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries (pg_ctl, initdb) not found")
    return candidates[-1].parent


class PostgresServer:
    """``settings`` are added to (or override) SETTINGS; ``parent`` is where its directory goes
    (default: the system's temporary directory); ``registry`` lists the postmaster's pid."""

    def __init__(
        self,
        *,
        settings: Mapping[str, str] | None = None,
        parent: Path | None = None,
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.bindir = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="heroes-pg-", dir=parent))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        self.settings = {**SETTINGS, **(settings or {})}
        self.registry = registry
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        """initdb, then the server."""
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale", "C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Start the server on its data directory and port (again, after pause())."""
        options = f"-p {self.port} -k {self.root}"
        options += "".join(f" -c {key}={value}" for key, value in self.settings.items())
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.logfile),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if self.registry is not None:
            self.registry.add("postgres", self.pid)

    def pause(self) -> None:
        """Stop the server as an operator would (fast shutdown: sessions are terminated)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        """Stop the server (fast, then immediate if it lingers) and delete its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._run(
                        "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"
                    )
                except RuntimeError:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            if self.registry is not None:
                self.registry.remove("postgres")
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def pid(self) -> int:
        """The postmaster's pid (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (dropped first if it exists); its URL."""
        return create_database(self.url(), name)


def create_database(admin_url: str, name: str) -> str:
    """Create an empty database next to the one ``admin_url`` names (dropped first if it
    exists); its URL, with the same driver."""
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"
