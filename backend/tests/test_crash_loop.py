"""The crash-loop breaker in the production server (deploy/gunicorn.conf.py, heroes.worker): real
gunicorn, workers that end the process at import three ways, and booted workers killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from .gunicorn_server import Gunicorn

#: Modules whose import ends the worker's process, and how gunicorn reports that end.
CRASHING = {
    "exit_7": ("raise SystemExit(7)\n", "exited with code 7"),
    "os_exit_9": ("import os\nos._exit(9)\n", "exited with code 9"),
    "segfault": ("import ctypes\nctypes.string_at(0)\n", "was sent SIGSEGV"),
}


@pytest.mark.parametrize("name", sorted(CRASHING))
def test_workers_dying_at_import_stop_the_server_with_one_line(tmp_path: Path, name: str) -> None:
    source, how = CRASHING[name]
    (tmp_path / f"{name}.py").write_text(source)
    server = Gunicorn(tmp_path, workers=2, app=f"{name}:app", PYTHONPATH=str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="gunicorn exited 3"):
        server.start(timeout=30)
    took = time.monotonic() - t0
    lines = [line for line in server.log_lines() if "crash loop" in line.get("msg", "")]
    assert len(lines) == 1, server.log_tail()
    assert lines[0]["msg"].startswith("Reason: crash loop: 2 workers died before they booted")
    assert "the last: Worker (pid:" in lines[0]["msg"]
    assert how in lines[0]["msg"]
    assert took < 20  # a worker boots in about a second: two die well within it


def test_booted_workers_that_die_are_replaced_as_before(tmp_path: Path) -> None:
    server = Gunicorn(tmp_path, workers=2)
    server.migrate()
    server.start()
    try:
        for _ in range(5):  # more than the breaker's 2, within its window
            victim = server.workers()[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                victim in server.workers() or len(server.workers()) < 2
            ):
                time.sleep(0.1)
            while time.monotonic() < deadline and not server.is_ready():
                time.sleep(0.1)
            time.sleep(2.5)  # the new worker's app has loaded (post_worker_init) by now
        assert server.process is not None
        assert server.process.poll() is None
        assert httpx.get(f"{server.url}/heroes/", timeout=5).status_code == 200
    finally:
        assert server.stop() == 0
    assert "crash loop" not in server.output()
