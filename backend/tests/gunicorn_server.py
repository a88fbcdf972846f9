"""The production server for end-to-end tests (harness.gunicorn): on an SQLite database in the
test's directory, with JSON log lines on stdout and a metrics directory of its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.gunicorn import GunicornServer, migrate, production_argv, production_env
from harness.procs import free_port


class Gunicorn(GunicornServer):
    def __init__(self, workdir: Path, workers: int, app: str | None = None, **env: str) -> None:
        self.metrics_dir = workdir / "metrics"
        port = free_port()
        settings = {
            "DATABASE_URL": f"sqlite:///{workdir / 'heroes.db'}",
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            **env,
        }
        super().__init__(
            production_argv(app),
            production_env(port, workers, settings),
            cwd=workdir,
            port=port,
            logfile=workdir / "stdout.log",
            stderr=workdir / "stderr.log",
            workers=workers,
        )

    @property
    def stderr_file(self) -> Path:
        assert self.stderr is not None
        return self.stderr

    def migrate(self) -> list[dict[str, Any]]:
        """`heroes migrate`; its log lines (JSON, like the server's)."""
        return migrate(self)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stdout line, parsed: fails on any line that is not a JSON object."""
        return [json.loads(line) for line in self.logfile.read_text().splitlines()]
