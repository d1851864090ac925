"""Unpack one tar layer into a fresh directory, treating every byte as hostile.

One streaming pass: the blob is read once, its digest and the tar's diff_id are computed as the
bytes go by, and the decompressed byte count is capped (a decompression bomb is refused as soon
as it crosses the cap, not after filling the disk). Member names that are absolute or hold
``..``, paths under a symlink, absolute symlink targets, device files and FIFOs are refused. The
caller unpacks into a staging directory and discards it on any error, so a refused layer leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

from harness._fs import clone_stamp
from harness.errors import StoreError, UnsafeLayerError
from harness.oci import EXPANSION_FLOOR, MAX_EXPANSION, Descriptor

from ._resume import Journal
from ._tarwrite import FsEntry, TarWriter, clean_name

__all__ = [
    "FsEntry",
    "LayerIndex",
    "UnpackLimits",
    "clean_name",
    "layer_compression",
    "unpack_layer",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class UnpackLimits:
    """Caps on what one layer may expand to. A layer bigger than ``ratio_floor`` bytes
    uncompressed may not exceed ``max_ratio`` times its compressed size (quantized weights
    compress to ~0.94, text to ~0.2; 100x is only reached by runs of zeros); nor may any
    layer exceed ``max_bytes`` (default: the free space where it is unpacked)."""

    max_ratio: float = MAX_EXPANSION
    ratio_floor: int = EXPANSION_FLOOR
    max_bytes: int | None = None
    max_entries: int = 100_000


@dataclass(frozen=True)
class LayerIndex:
    """What a layer holds, in tar order, and what it deletes from the layers below."""

    digest: str
    diff_id: str
    entries: tuple[FsEntry, ...]
    whiteouts: tuple[str, ...]
    opaque: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "diff_id": self.diff_id,
            "entries": [[e.path, e.kind, e.mode, e.size, e.target] for e in self.entries],
            "whiteouts": list(self.whiteouts),
            "opaque": list(self.opaque),
        }

    @classmethod
    def load(cls, path: Path) -> LayerIndex:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                data["digest"],
                data["diff_id"],
                tuple(FsEntry(p, k, m, s, t) for p, k, m, s, t in data["entries"]),
                tuple(data["whiteouts"]),
                tuple(data["opaque"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            raise StoreError(
                f"{path} is missing or corrupt; remove the model and pull again"
            ) from None


def layer_compression(media_type: str) -> str | None:
    """ "gzip", "zstd" or "none" for a tar layer media type (image, ModelPack, Docker); None for
    a raw blob (a ModelPack ``.raw`` weight, a Docker Model Runner GGUF)."""
    base = media_type.split(";", 1)[0]
    if "tar" not in base.rsplit("/", 1)[-1].replace("+", ".").split("."):
        return None
    if base.endswith(("gzip", "+gz")):
        return "gzip"
    if base.endswith("zstd"):
        return "zstd"
    return "none"


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Hashed:
    def __init__(self, inner: _Readable, algorithm: str | None) -> None:
        self._inner = inner
        self.hash = hashlib.new(algorithm) if algorithm else None
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        if self.hash is not None:
            self.hash.update(data)
        return data


class _Forward:
    """The tar stream as tarfile's seekable reader sees it: it only ever seeks ahead (past a
    member's padding), which reads and drops the bytes. Unlike tarfile's stream mode ("r|"),
    whose buffer joins and slices every megabyte again (a third of a 4 GB pull's time), a
    member's bytes are read straight from the stream (``TarWriter``)."""

    def __init__(self, inner: _Readable) -> None:
        self._inner = inner
        self._position = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        if 0 < len(data) < size:
            # A decompressor may answer short (zstd does): tarfile takes a short header for
            # the end of the data, so fill the request as its stream mode did.
            parts = [data]
            left = size - len(data)
            while left and (more := self._inner.read(left)):
                parts.append(more)
                left -= len(more)
            data = b"".join(parts)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self._position
        elif whence != 0:
            raise tarfile.ReadError("a layer's tar is read from its start to its end")
        if offset < self._position:
            raise tarfile.ReadError(f"a tar header points back to offset {offset}")
        while self._position < offset and self.read(min(_CHUNK, offset - self._position)):
            pass  # at the end of the data: the next read finds nothing, and tarfile says so
        return self._position


class _Capped(_Hashed):
    def __init__(self, inner: _Readable, algorithm: str | None, cap: int, what: str) -> None:
        super().__init__(inner, algorithm)
        self._cap = cap
        self._what = what

    def read(self, size: int = -1, /) -> bytes:
        data = super().read(size)
        if self.count > self._cap:
            raise UnsafeLayerError(
                f"{self._what} expands beyond {self._cap} bytes: refused as a decompression bomb"
            )
        return data


def unpack_layer(
    blob: Path | _Readable,
    descriptor: Descriptor,
    diff_id: str | None,
    dest: Path,
    limits: UnpackLimits,
    *,
    verify_digest: bool = True,
    journal: Journal | None = None,
) -> LayerIndex:
    """Unpack the tar layer ``blob`` (a file, or a stream as it downloads) into ``dest/fs``
    (``dest`` must not exist) and write ``dest/index.json``; returns the index. Raises
    UnsafeLayerError or StoreError. ``verify_digest`` False: the caller verified the bytes
    (a stream reaches its end only once its digest checked). ``journal``: an uncompressed
    layer's resumable staging (``_resume``): ``dest`` may hold what a killed pull wrote, and
    ``blob`` starts with those bytes again."""
    compression = layer_compression(descriptor.media_type)
    if compression is None:
        raise StoreError(f"layer {descriptor.digest} ({descriptor.media_type}) is not a tar")
    what = f"layer {descriptor.digest[:19]}"
    resuming = journal is not None and journal.offset > 0
    dest.mkdir(exist_ok=resuming)
    root = dest / "fs"
    root.mkdir(exist_ok=resuming)
    cap = max(limits.ratio_floor, int(limits.max_ratio * max(descriptor.size, 1)))
    free = limits.max_bytes
    if free is None:  # what a killed pull wrote is part of the layer, not taken from its room
        free = shutil.disk_usage(dest).free + (journal.offset if journal else 0)
    cap = min(cap, free)
    algorithm = descriptor.digest.split(":", 1)[0]
    # An uncompressed layer's diff_id is its digest: hashing it a second time would cost a
    # whole pass of sha256 (about 11 s for 4 GB on a core without SHA extensions).
    same = compression == "none" and algorithm == "sha256"
    with _opened(blob) as raw:
        compressed = _Hashed(raw, algorithm if verify_digest else None)
        tar_stream = _Capped(
            _decompressor(compression, compressed), None if same else "sha256", cap, what
        )
        # An uncompressed layer in a local file (a layout's blob): a member's data is at its tar
        # offset in the file, so its blocks can be shared with what is unpacked (reflinks).
        local = compression == "none" and isinstance(blob, Path)
        clone_from = cast(IO[bytes], raw).fileno() if local else None
        stamp = clone_stamp(clone_from) if clone_from is not None else None
        writer = TarWriter(root, what, limits.max_entries, journal, clone_from)
        read: _Readable = journal.record(tar_stream) if journal is not None else tar_stream
        try:
            with tarfile.open(
                fileobj=cast(IO[bytes], _Forward(read)),
                mode="r:",
                errors="surrogateescape",
            ) as tar:
                for member in tar:
                    writer.add(tar, member)
            while tar_stream.read(_CHUNK):
                pass  # zero padding after the end marker: still part of both digests
        except UnsafeLayerError:
            raise
        except (tarfile.TarError, zlib.error, EOFError, ValueError, OSError) as exc:
            raise StoreError(f"{what} is not a valid {compression} tar: {exc}") from None
        while compressed.read(_CHUNK):
            pass
        # Cloned parts are the blob as it was when cloned, the digest is of the bytes as read:
        # the same only if the file did not change in between.
        if clone_from is not None and clone_stamp(clone_from) != stamp:
            raise StoreError(f"{what}: the blob changed while it was unpacked")
    if compressed.hash is not None:
        actual = f"{algorithm}:{compressed.hash.hexdigest()}"
        if actual != descriptor.digest or compressed.count != descriptor.size:
            raise StoreError(f"{what}: blob hashes to {actual}, not its digest")
    if tar_stream.hash is None:
        actual_diff = descriptor.digest  # verified above, or by the caller
    else:
        actual_diff = "sha256:" + tar_stream.hash.hexdigest()
    if diff_id is not None and actual_diff != diff_id:
        raise StoreError(f"{what}: uncompressed tar hashes to {actual_diff}, config says {diff_id}")
    index = LayerIndex(
        descriptor.digest, actual_diff, tuple(writer.entries.values()), tuple(writer.whiteouts),
        tuple(writer.opaque),
    )  # fmt: skip
    with open(dest / "index.json", "w", encoding="utf-8") as out:
        json.dump(index.to_json(), out)
        out.flush()
        os.fsync(out.fileno())
    return index


@contextlib.contextmanager
def _opened(blob: Path | _Readable) -> Iterator[_Readable]:
    if not isinstance(blob, Path):
        yield blob
        return
    with open(blob, "rb") as raw:
        yield raw


def _decompressor(compression: str, source: _Hashed) -> _Readable:
    if compression == "none":
        return source
    if compression == "gzip":
        return gzip.GzipFile(fileobj=cast(IO[bytes], source), mode="rb")
    import zstandard

    reader: _Readable = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], source), read_across_frames=True
    )
    return reader
