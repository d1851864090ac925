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
from harness.errors import BuildError, Location

__all__ = ["ContentStore", "cache_root", "stamp_of"]

_SCRATCH = "scratch-"

_CHUNK = 1 << 20
# A stand-in digest's prefix: never a sha256, so never a blob's or a cache key's.
_UNHASHED = "unhashed:"


class ContentStore:
    """Files by sha256 under ``root/blobs``; plus the remembered digests of outside files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._stat_file = root / "digests.json"
        self._stats: dict[str, list[object]] = self._load_stats()
        self._stats_dirty = False
        # digest -> the outside files hashed to it (their stamps checked on use)
        self._outside: dict[str, list[str]] = {}
        for name, known in self._stats.items():
            if isinstance(known, list) and len(known) == 5:
                self._outside.setdefault(str(known[4]), []).append(name)
        # stand-in digest -> the outside file not hashed yet, and its stamp when named
        self._unhashed: dict[str, tuple[Path, list[object]]] = {}

    def path(self, digest: str) -> Path:
        """Where a file with ``digest`` can be read: the store's blob, else an outside file the
        store hashed and could not link, while it is unchanged; for a stand-in, its file."""
        if digest in self._unhashed:
            return self._unhashed[digest][0]
        blob = self._blob(digest)
        if blob.is_file():
            return blob
        for name in self._outside.get(digest, ()):
            if stamp_of(Path(name)) == self._stats[name][:4]:
                return Path(name)
        return blob

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def _blob(self, digest: str) -> Path:
        return self._blobs / digest.removeprefix("sha256:")

    def known_digest(self, path: Path) -> str | None:
        """The remembered sha256 of an outside file, while its identity and mtime are the same."""
        known = self._stats.get(str(path.resolve()))
        if known is not None and known[:4] == stamp_of(path):
            return str(known[4])
        return None

    def digest_of(self, path: Path) -> str:
        """sha256 of a file, remembered while the file's identity and mtime stay the same."""
        known = self.known_digest(path)
        if known is not None:
            return known
        stamp = stamp_of(path)
        digest = _sha256_file(path)
        self._remember(path, stamp, digest)
        return digest

    def remember(self, path: Path, stamp: list[object], digest: str) -> None:
        """Remember ``digest`` of ``path``, which the caller checked while its stamp was
        ``stamp`` (and does not keep in the store); nothing when the file changed since."""
        if stamp and stamp_of(path) == stamp:
            self._remember(path, stamp, digest)

    def _remember(self, path: Path, stamp: list[object], digest: str) -> None:
        key = str(path.resolve())
        self._stats[key] = [*stamp, digest]
        self._outside.setdefault(digest, []).append(key)
        self._stats_dirty = True

    def put_file(self, path: Path) -> str:
        """Keep ``path`` in the store (a hard link when possible) and return its digest."""
        digest = self.digest_of(path)
        self._keep(path, digest)
        return digest

    def put_hashed(self, path: Path, stamp: list[object], digest: str) -> None:
        """Keep ``path``, hashed by the caller to ``digest`` while its stamp was ``stamp``
        (as the stamp says before and after the read): a file changed meanwhile is refused."""
        if stamp_of(path) != stamp:
            raise BuildError("changed while the build read it", Location(path=str(path)))
        self._remember(path, stamp, digest)
        self._keep(path, digest)

    def _keep(self, path: Path, digest: str) -> None:
        """A hard link into the store; a file the store cannot link (another filesystem) is not
        copied: the store refers to it where it is, for as long as its identity and mtime stay
        the same (``path(digest)`` finds it), so a model's bytes are on the disk once, in the
        layer that carries them."""
        if not self._blob(digest).exists():
            fd, tmp = tempfile.mkstemp(dir=self._blobs, prefix=".in-")
            os.close(fd)
            os.unlink(tmp)
            try:
                os.link(path, tmp)
                os.replace(tmp, self._blob(digest))
            except OSError:
                pass  # referred to in place, through the remembered digests
            finally:
                Path(tmp).unlink(missing_ok=True)

    def unhashed(self, path: Path, stamp: list[object]) -> str:
        """A stand-in digest for an outside file not hashed yet, named while its stamp was
        ``stamp``: a stage outside the image holds it until a step needs the real one
        (``resolve``), or the pass writing the image's layer hashes it (``waiting``)."""
        name = f"{_UNHASHED}{len(self._unhashed)}"
        self._unhashed[name] = (path, stamp)
        return name

    def waiting(self, digest: str) -> tuple[Path, list[object]] | None:
        """The file and stamp behind a stand-in digest that nothing has hashed since."""
        found = self._unhashed.get(digest)
        return None if found is None or self.known_digest(found[0]) is not None else found

    def resolve(self, digest: str) -> str:
        """The real digest: a stand-in's file hashed now (once: remembered by its stamp)."""
        found = self._unhashed.get(digest)
        if found is None:
            return digest
        path, stamp = found
        known = self.known_digest(path)
        if known is None:
            known = _sha256_file(path)
            self.put_hashed(path, stamp, known)
        elif stamp_of(path) != stamp:
            raise BuildError("changed while the build read it", Location(path=str(path)))
        return known

    def forget(self, path: Path, digest: str) -> None:
        """Drop an outside name of ``digest`` that the store's blob holds too (the blob stays),
        unless a stand-in of this build still reads it."""
        if not self._blob(digest).is_file() or any(
            path == found for found, _stamp in self._unhashed.values()
        ):
            return
        key = str(path.resolve())
        if self._stats.pop(key, None) is not None:
            self._outside[digest] = [n for n in self._outside.get(digest, ()) if n != key]
            self._stats_dirty = True
        path.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.is_file():
            atomic_write(self._blob(digest), data)
        return digest

    def put_stream(self, reader: IO[bytes], chunk: Callable[[int], None]) -> tuple[str, int]:
        """Store what ``reader`` yields, streamed (never whole in memory); ``chunk(n)`` is told
        each piece's size first and may raise to stop. Returns (digest, size)."""
        scratch = self.scratch()
        try:
            tmp = scratch / "in"
            size = 0
            digest = hashlib.sha256()
            with tmp.open("wb") as out:
                while piece := reader.read(_CHUNK):
                    chunk(len(piece))
                    size += len(piece)
                    digest.update(piece)
                    out.write(piece)
            return self.adopt(tmp, "sha256:" + digest.hexdigest()), size
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def adopt(self, tmp: Path, digest: str | None = None) -> str:
        """Move a finished temporary file (a step's output) into the store. ``digest``: its
        sha256 as the writer computed it while writing, so the file is not read again."""
        digest = digest or _sha256_file(tmp)
        target = self._blob(digest)
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


def stamp_of(path: Path) -> list[object]:
    """What identifies a file's content short of reading it: device, inode, size, mtime."""
    try:
        st = path.stat()
    except OSError:
        return []
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
