"""The `heroes` command: migrate, check and serve, with readable failures."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.gunicorn import BIN, SERVICE_VARS
from harness.procs import free_port
from heroes import cli
from heroes.config import get_settings
from heroes.db import migrate
from heroes.logs import logging_config


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "cli.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("ENVIRONMENT", "development")
    get_settings.cache_clear()
    yield db
    get_settings.cache_clear()


def test_migrate_then_check(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check"]) == 1
    assert "database check failed" in capsys.readouterr().err
    assert cli.main(["migrate"]) == 0
    assert cli.main(["check"]) == 0
    assert "schema at 0002" in capsys.readouterr().out


def test_downgrade_then_migrate_to_a_revision(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate"]) == 0
    assert cli.main(["downgrade", "base"]) == 0
    assert cli.main(["check"]) == 1
    assert "schema at None, expected 0002" in capsys.readouterr().err
    assert cli.main(["migrate", "--revision", "0002"]) == 0
    assert cli.main(["check"]) == 0


def test_check_reports_schema_behind(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["migrate"]) == 0
    behind = migrate.SchemaExpectation(head="0003", known=frozenset({"0001", "0002", "0003"}))
    monkeypatch.setattr(migrate.SchemaExpectation, "of", lambda _settings: behind)
    assert cli.main(["check"]) == 1
    assert "run `heroes migrate`" in capsys.readouterr().err


def test_check_with_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://heroes@127.0.0.1:1/heroes")
    get_settings.cache_clear()
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("heroes: database check failed:")
    assert err.count("\n") == 1


def test_bad_settings_exit_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://heroes:changeme@db/heroes")
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as caught:
        cli.main(["check"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("heroes: invalid configuration:")
    assert err.count("\n") == 1
    get_settings.cache_clear()


def test_serve_migrates_sqlite_first(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/dev/shm/heroes-metrics")  # as in the image
    assert cli.main(["serve", "--port", "8123"]) == 0
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # one process: the ordinary registry
    assert env.exists()
    assert calls == [
        {
            "app": "heroes.main:create_app",
            "factory": True,
            "host": "127.0.0.1",
            "port": 8123,
            "reload": False,
            "log_level": "info",
            "log_config": logging_config("info", "json"),
            "access_log": False,
        }
    ]
    assert cli.main(["check"]) == 0


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["explode"])
    assert caught.value.code == 2


def _read_until(
    fd: int, output: bytearray, marker: bytes, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 60
    while marker not in output:
        assert time.monotonic() < deadline, f"no {marker!r} in: {output.decode(errors='replace')}"
        assert process.poll() is None, output.decode(errors="replace")
        if select.select([fd], [], [], 0.2)[0]:
            output += os.read(fd, 65536)


def test_serve_on_a_terminal_prints_readable_lines(tmp_path: Path) -> None:
    """`heroes serve` with its output on a terminal (a pty) and LOG_FORMAT unset: text lines."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_VARS)}
    env |= {"DATABASE_URL": f"sqlite:///{tmp_path / 'tty.db'}", "ENVIRONMENT": "development"}
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "heroes"), "serve", "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env, cwd=tmp_path,
    )  # fmt: skip
    os.close(secondary)
    output = bytearray()
    try:
        _read_until(primary, output, b"Application startup complete", process)
        answer = httpx.get(f"http://127.0.0.1:{port}/heroes/", headers={"X-Request-ID": "tty-1"})
        assert answer.status_code == 200
        _read_until(primary, output, b"tty-1", process)
    finally:
        process.terminate()
        process.wait(30)
        os.close(primary)
    lines = output.decode().splitlines()
    assert not [line for line in lines if line.lstrip().startswith("{")]
    [access] = [line for line in lines if " heroes.access " in line]
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO +heroes.access \[tty-1\] GET", access
    )
