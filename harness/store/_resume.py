"""An uncompressed tar layer's download, resumable after ``kill -9``.

A layer is unpacked as it downloads: the blob itself is never stored, so a killed pull's work is
its staged files. Each layer being pulled gets ``tmp/resume-<hex>/`` (keyed by its digest, not
the pull's pid; ``tmp/resume-<hex>.lock`` held while a pull uses it): ``layer/``, the unpack's
destination, and ``journal``, which says how the blob's first N bytes can be had again: the tar
headers and padding seen (their bytes, in the journal) and which staged file holds which data.
Every ~64 MiB the file being written is fsync'd, then the journal's new records and N.

The next pull of the layer replays those N bytes (headers from the journal, data read back from
the staged files: about 1.3 GB/s, hashing included) through the same tar reader and checks as a
fresh pull, so every name, link and limit is checked over the whole layer; the file being
written when the pull was killed is continued in place; the rest comes from a Range request and
the digest checked at the end covers every byte. A journal that does not match (another digest,
a staged file changed or missing, a digest that fails) means the layer is fetched again from 0.

Compressed (gzip, zstd) layers start over: a decompressor's state cannot be rebuilt from the
unpacked files without decompressing everything again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from harness._fs import remove_tree, try_lock
from harness.distribution import ImageSource, Prefix, open_blob
from harness.oci import Descriptor

__all__ = ["Journal", "Spot", "adopt", "resumed_blob", "staged_bytes", "sweep_resumable"]

_EVERY = 64 << 20  # bytes between two checkpoints
_PREFIX = "resume-"
_CHUNK = 1 << 20


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Spot:
    """A layer's resumable staging place, held (locked) by this pull."""

    def __init__(self, tmp: Path, digest: str, lock: int) -> None:
        self.digest = digest
        self.dir = tmp / f"{_PREFIX}{digest.split(':', 1)[1]}"
        self.lock_path = self.dir.with_name(self.dir.name + ".lock")
        self.layer = self.dir / "layer"
        self._lock: int | None = lock

    def reset(self) -> None:
        """Drop whatever was staged: the next unpack starts from byte 0."""
        remove_tree(self.dir)

    def finish(self) -> None:
        """The layer is in the store: remove what is left here and let go."""
        remove_tree(self.dir)
        self.lock_path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def adopt(tmp: Path, digest: str) -> Spot | None:
    """The resumable place of the layer ``digest``, locked; None when another pull holds it."""
    lock = try_lock(tmp / f"{_PREFIX}{digest.split(':', 1)[1]}.lock")
    return Spot(tmp, digest, lock) if lock is not None else None


def staged_bytes(tmp: Path, digest: str) -> int:
    """The bytes a killed pull of the layer ``digest`` left staged (part of the layer's room)."""
    root = tmp / f"{_PREFIX}{digest.split(':', 1)[1]}" / "layer" / "fs"
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def sweep_resumable(tmp: Path, keep: set[str], remove: Callable[[Path], int]) -> int:
    """Remove the resumable layers no pull holds, except those of ``keep`` (digests); returns
    what ``remove`` returned, summed (the bytes freed)."""
    try:
        entries = [e for e in tmp.iterdir() if e.name.startswith(_PREFIX)]
    except OSError:
        return 0
    freed = 0
    kept = {f"{_PREFIX}{d.split(':', 1)[1]}" for d in keep}
    for entry in entries:
        name = entry.name.removesuffix(".lock")
        if name in kept or not entry.name.endswith(".lock"):
            continue
        lock = try_lock(entry)
        if lock is None:
            continue
        freed += remove(entry.with_name(name))
        entry.unlink(missing_ok=True)
        os.close(lock)
    return freed


@dataclass
class _File:
    rel: str
    at: int  # where its data starts in the blob
    size: int


class Journal:
    """What a layer's staged files and journal hold of its blob (``offset`` bytes), and the
    recorder that extends it while the unpack goes on."""

    def __init__(self, spot: Spot, size: int) -> None:
        self.spot = spot
        self.size = size  # the blob's: a journal reaching it is not one a Range can continue
        self.path = spot.dir / "journal"
        self.segments: list[tuple[str, str | bytes, int, int]] = []  # kind, data|rel, at, length
        self.offset = 0
        self._load()
        if not self.offset:
            spot.reset()
            spot.dir.mkdir(parents=True)
            with open(self.path, "w", encoding="utf-8") as out:
                out.write(json.dumps({"journal": 1, "digest": spot.digest}) + "\n")
        self._out: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.position = 0  # of the tar stream read so far (replay included)
        self._done = self.offset  # bytes accounted for: replayed, or recorded below
        self._pending: list[bytearray | _File] = []  # records not yet written
        self._file: _File | None = None  # the member whose data is being read
        self._checkpoint = self.offset
        self._broken = False

    def close(self) -> None:
        self._out.close()

    # --- loading ------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        lines = text.split("\n")[:-1]  # a torn last line (no newline) is not read
        try:
            if json.loads(lines[0]) != {"journal": 1, "digest": self.spot.digest}:
                return
            segments: list[tuple[str, str | bytes, int, int]] = []
            good: tuple[int, int, tuple[str, str | bytes, int, int] | None, int] | None = None
            size = len(lines[0]) + 1
            for line in lines[1:]:
                size += len(line.encode()) + 1
                record = json.loads(line)
                if "raw" in record:
                    data = base64.b64decode(record["raw"])
                    segments.append(("raw", data, 0, len(data)))
                elif "file" in record:
                    entry = ("file", str(record["file"]), int(record["at"]), int(record["length"]))
                    if segments and segments[-1][0] == "file" and segments[-1][2] == entry[2]:
                        segments[-1] = entry  # the same member, further along
                    else:
                        segments.append(entry)
                else:
                    last = segments[-1] if segments else None
                    good = (int(record["offset"]), len(segments), last, size)
        except (ValueError, KeyError, TypeError, IndexError):
            return
        if good is None:
            return
        offset, count, last, size = good
        del segments[count:]
        if last is not None:
            segments[-1] = last
        if offset >= self.size or sum(s[3] for s in segments) != offset:
            return
        if not self._files_hold(segments):
            return
        os.truncate(self.path, size)  # records after the last checkpoint are not replayed
        self.segments, self.offset = segments, offset

    def _files_hold(self, segments: list[tuple[str, str | bytes, int, int]]) -> bool:
        for kind, rel, _at, length in segments:
            if kind == "file":
                try:
                    found = (self.spot.layer / "fs" / str(rel)).lstat()
                except OSError:
                    return False
                if not stat.S_ISREG(found.st_mode) or found.st_size < length:
                    return False
        return True

    # --- replaying ----------------------------------------------------------------------------

    def replay(self, digest: hashlib._Hash) -> Iterator[bytes]:
        """The first ``offset`` bytes of the blob again, fed into ``digest`` as they go by."""
        root = self.spot.layer / "fs"
        for kind, data, _at, length in self.segments:
            if kind == "raw":
                assert isinstance(data, bytes)
                digest.update(data)
                yield data
                continue
            fd = os.open(root / str(data), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as source:
                left = length
                while left:
                    piece = source.read(min(_CHUNK, left))
                    if not piece:
                        raise OSError(f"staged file {data!r} is shorter than its journal says")
                    digest.update(piece)
                    left -= len(piece)
                    yield piece

    # --- recording (called by the unpack) -----------------------------------------------------

    def record(self, inner: _Readable) -> _Readable:
        journal = self

        class _Recorder:
            def read(self, size: int = -1, /) -> bytes:
                data = inner.read(size)
                journal._saw(data)
                return data

        return _Recorder()

    def _saw(self, data: bytes) -> None:
        start = self.position
        end = self.position = start + len(data)
        if end <= self._done:
            return  # replayed: in the journal already
        cut = max(start, self._done)
        member = self._file
        if member is not None and member.at <= cut < member.at + member.size:
            cut = self._done = min(end, member.at + member.size)
        if cut < end:
            if not self._pending or not isinstance(self._pending[-1], bytearray):
                self._pending.append(bytearray())
            raw = self._pending[-1]
            assert isinstance(raw, bytearray)
            raw.extend(data[cut - start :])
            self._done = end

    def begin_file(self, rel: str, at: int, size: int) -> int:
        """A member's data starts at blob offset ``at``: how many of its bytes the staged file
        already holds (replayed: they are read past, not written)."""
        if at < self.offset:
            covered = min(size, self.offset - at)
            if covered < size:  # the member the killed pull was writing: continued
                self._file = _File(rel, at, size)
                self._pending.append(self._file)
            return covered
        if at != self._done:
            self._broken = True  # bytes went by unrecorded: no more checkpoints
        self._file = _File(rel, at, size)
        self._pending.append(self._file)
        return 0

    def wrote(self, out: IO[bytes]) -> None:
        """The current member's bytes so far are written to ``out``: checkpoint now and then."""
        if self._broken or self._done - self._checkpoint < _EVERY:
            return
        out.flush()
        os.fsync(out.fileno())
        lines: list[dict[str, object]] = []
        for item in self._pending:
            if isinstance(item, bytearray):
                lines.append({"raw": base64.b64encode(item).decode()})
            else:
                length = min(item.size, self._done - item.at)
                lines.append({"file": item.rel, "at": item.at, "length": length})
        lines.append({"offset": self._done})
        self._out.write("".join(json.dumps(line) + "\n" for line in lines))
        self._out.flush()
        os.fsync(self._out.fileno())
        self._checkpoint = self._done
        self._pending = [self._file] if self._file is not None else []


@contextlib.contextmanager
def resumed_blob(
    source: ImageSource, descriptor: Descriptor, journal: Journal
) -> Iterator[_Readable]:
    """The blob's bytes: replayed from the journal up to its offset, then fetched from there
    (a Range request) once the replay is read; the fetch verifies the whole blob's digest."""
    with contextlib.ExitStack() as stack:
        digest = hashlib.new(descriptor.digest.split(":", 1)[0])
        pieces = journal.replay(digest) if journal.offset else iter(())

        class _Chain:
            def __init__(self) -> None:
                self.piece, self.at = b"", 0
                self.stream: _Readable | None = None

            def read(self, size: int = -1, /) -> bytes:
                while self.stream is None and self.at == len(self.piece):
                    piece = next(pieces, None)
                    if piece is None:
                        prefix = Prefix(journal.offset, digest) if journal.offset else None
                        self.stream = stack.enter_context(open_blob(source, descriptor, prefix))
                    else:
                        self.piece, self.at = piece, 0
                if self.stream is not None:
                    return self.stream.read(size)
                left = len(self.piece) - self.at
                if self.at == 0 and (size < 0 or size >= left):
                    self.at = left
                    return self.piece  # whole: no copy
                size = left if size < 0 else min(size, left)
                data = self.piece[self.at : self.at + size]
                self.at += size
                return data

        yield _Chain()
