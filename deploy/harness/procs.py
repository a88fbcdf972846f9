"""Process bookkeeping for the launchers: free ports, children, pid files."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (gunicorn's workers), [] when it is gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


class ProcessRegistry:
    """Writes ``<dir>/<name>.pid`` for every process a harness starts, so that a wrapper script
    (deploy/scripts/bench.sh's exit trap) can signal what is still listed there, by pid, if
    the harness dies uncleanly."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, pid: int) -> None:
        (self.directory / f"{name}.pid").write_text(f"{pid}\n")

    def remove(self, name: str) -> None:
        (self.directory / f"{name}.pid").unlink(missing_ok=True)
