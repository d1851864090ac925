"""Content-addressed files for the builder: every input and output file is kept once, by digest.

Steps hand each other digests, not paths; a step whose inputs' digests are unchanged is a cache
hit. Hashing a multi-hundred-megabyte context file on every build would dominate a no-op rebuild,
so digests of files outside the store are remembered by (device, inode, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from harness._fs import atomic_write, cache_root, owned_name, sweep_stale

__all__ = ["ContentStore", "cache_root"]

_SCRATCH = "scratch-"

_CHUNK = 1 << 20


class ContentStore:
    """Files by sha256 under ``root/blobs``; plus the remembered digests of outside files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._stat_file = root / "digests.json"
        self._stats: dict[str, list[object]] = self._load_stats()
        self._stats_dirty = False

    def path(self, digest: str) -> Path:
        return self._blobs / digest.removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def digest_of(self, path: Path) -> str:
        """sha256 of a file, remembered while the file's identity and mtime stay the same."""
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        known = self._stats.get(key)
        if known is not None and known[:4] == stamp:
            return str(known[4])
        digest = _sha256_file(path)
        self._stats[key] = [*stamp, digest]
        self._stats_dirty = True
        return digest

    def put_file(self, path: Path) -> str:
        """Keep a copy of ``path`` (a hard link when possible) and return its digest."""
        digest = self.digest_of(path)
        target = self.path(digest)
        if not target.exists():
            fd, tmp = tempfile.mkstemp(dir=self._blobs, prefix=".in-")
            os.close(fd)
            os.unlink(tmp)
            try:
                try:
                    os.link(path, tmp)
                except OSError:
                    shutil.copyfile(path, tmp)
                os.replace(tmp, target)
            finally:
                Path(tmp).unlink(missing_ok=True)
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            atomic_write(target, data)
        return digest

    def put_stream(self, reader: IO[bytes], chunk: Callable[[int], None]) -> tuple[str, int]:
        """Store what ``reader`` yields, streamed (never whole in memory); ``chunk(n)`` is told
        each piece's size first and may raise to stop. Returns (digest, size)."""
        scratch = self.scratch()
        try:
            tmp = scratch / "in"
            size = 0
            with tmp.open("wb") as out:
                while piece := reader.read(1 << 20):
                    chunk(len(piece))
                    size += len(piece)
                    out.write(piece)
            return self.adopt(tmp), size
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def adopt(self, tmp: Path) -> str:
        """Move a finished temporary file (a step's output) into the store."""
        digest = _sha256_file(tmp)
        target = self.path(digest)
        if target.exists():
            tmp.unlink()
        else:
            os.replace(tmp, target)
        return digest

    def scratch(self) -> Path:
        """A private temporary directory inside the store's filesystem, so outputs can be moved
        in by rename instead of copied."""
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        # Named for this process, so that what a killed build left is swept by the next one.
        sweep_stale(tmp, _SCRATCH)
        return Path(tempfile.mkdtemp(prefix=owned_name(_SCRATCH), dir=tmp))

    def save(self) -> None:
        if self._stats_dirty:
            atomic_write(self._stat_file, json.dumps(self._stats).encode())
            self._stats_dirty = False

    def _load_stats(self) -> dict[str, list[object]]:
        try:
            data = json.loads(self._stat_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
