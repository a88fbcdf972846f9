"""A small ext4 filesystem in a file, loop-mounted on the host: a disk the drills can fill for
real (drill 18: PostgreSQL's data directory on it; drill 36: a volume the node exporter watches).
Needs root (mount) on the host, as the drills' CI has."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import suppress
from pathlib import Path


class LoopDisk:
    def __init__(self, size_mb: int) -> None:
        self.size_mb = size_mb
        self.root = Path(tempfile.mkdtemp(prefix="heroes-disk-"))
        self.image, self.mount = self.root / "disk.img", self.root / "mnt"
        self.filler = self.mount / "filler"

    def __enter__(self) -> LoopDisk:
        subprocess.run(["truncate", "-s", f"{self.size_mb}M", str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(self.image)], check=True)
        self.mount.mkdir()
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], check=True)
        return self

    def directory(self, name: str, uid: int) -> Path:
        """A 0700 directory on the disk owned by ``uid`` (a container's user)."""
        path = self.mount / name
        path.mkdir(mode=0o700)
        shutil.chown(path, uid, uid)
        return path

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.mount).free

    def fill(self) -> None:
        """Every free block taken: written until the filesystem refuses, 1 MiB then 4 KiB at a
        time."""
        with self.filler.open("ab", buffering=0) as out:
            for size in (1 << 20, 4096):
                chunk = bytes(size)
                with suppress(OSError):
                    while True:
                        out.write(chunk)

    def grow(self, nbytes: int) -> None:
        """``nbytes`` more in the filler file, on disk before it returns."""
        with self.filler.open("ab", buffering=0) as out:
            out.write(bytes(nbytes))
            os.fsync(out.fileno())

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def __exit__(self, *_: object) -> None:
        subprocess.run(["umount", "-l", str(self.mount)], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
