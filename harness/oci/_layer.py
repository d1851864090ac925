"""Write one reproducible tar layer, streaming: hashing, compressing and writing in one pass.

A GGUF file is hundreds of megabytes, so file data is never held in memory, and the tar is never
written out uncompressed: each chunk updates the diff_id hash, goes through the compressor and
updates the blob hash on its way to disk.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from harness._progress import Progress, progress
from harness.errors import Location, OCIError

from ._media import OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, Descriptor

__all__ = [
    "COMPRESSIONS",
    "Layer",
    "LayerEntry",
    "LayerStats",
    "default_mtime",
    "in_image_path",
    "layer_bound",
    "write_layer",
]

COMPRESSIONS = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}
# Levels chosen by benchmarks/layer_compression.py: quantized weights barely compress, so the
# fast levels cost almost nothing in size and save most of the time.
DEFAULT_LEVELS = {"gzip": 1, "zstd": 3}
_CHUNK = 1 << 20
_BLOCK = 512
_DIR_MODE = 0o755


@dataclass(frozen=True)
class LayerEntry:
    """A file to place in a layer: ``source`` is a filesystem path (streamed) or the bytes."""

    path: str  # in-image path; "/app/model.gguf" and "app/model.gguf" mean the same
    source: str | os.PathLike[str] | bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    # Also hash the file's own bytes as they go into the layer (LayerStats.sources): a caller
    # that has not hashed it yet needs no second pass over it.
    hash_source: bool = False


@dataclass(frozen=True)
class Layer:
    """A layer blob as written: its descriptor (compressed) and diff_id (uncompressed tar)."""

    descriptor: Descriptor
    diff_id: str
    tar_size: int  # bytes of the uncompressed tar


@dataclass(frozen=True)
class LayerStats:
    digest: str
    size: int
    diff_id: str
    tar_size: int
    sources: dict[str, str] = field(default_factory=dict)  # in-image path -> its file's sha256


class _Compressor(Protocol):
    def compress(self, data: bytes | memoryview, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes | memoryview, /) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


def in_image_path(path: str, what: str = "path") -> str:
    """``path`` without its leading slash, refusing anything that is not a plain in-image path.

    ``..`` and ``.`` components, empty components and NUL are refused rather than normalised:
    a caller who wrote them meant something we would only be guessing at.
    """
    if not isinstance(path, str) or "\0" in path:
        raise OCIError(f"{what} {path!r} is not a valid in-image path")
    parts = path.lstrip("/").split("/")
    if parts == [""] or any(part in ("", ".", "..") for part in parts):
        raise OCIError(f"{what} {path!r} is not a plain in-image path (empty, '.' or '..' part)")
    return "/".join(parts)


def default_mtime() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible-builds.org convention), else 0."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise OCIError(f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds") from None
    if value < 0:
        raise OCIError(f"SOURCE_DATE_EPOCH={raw!r} is negative")
    return value


def write_layer(
    entries: Iterable[LayerEntry],
    out: BinaryIO,
    compression: str = "gzip",
    level: int | None = None,
    mtime: int | None = None,
) -> LayerStats:
    """Write the tar of ``entries`` to ``out``, compressed; return both digests and sizes."""
    files = _collect(entries)
    sink = _Sink(out, _compressor(compression, level))
    stamp = default_mtime() if mtime is None else mtime
    sources: dict[str, str] = {}
    sizes = {name: _source_size(entry) for name, entry in files.items()}
    biggest = max(sizes, key=lambda name: sizes[name], default="")
    # a multi-GB layer takes minutes: bytes, rate and ETA (nothing for small ones)
    with progress(f"layer {biggest.rsplit('/', 1)[-1]}", total=sum(sizes.values())) as bar:
        _write_members(files, sizes, sink, stamp, sources, bar)
    stats = sink.close()
    return LayerStats(stats.digest, stats.size, stats.diff_id, stats.tar_size, sources)


def _write_members(
    files: dict[str, LayerEntry],
    sizes: dict[str, int],
    sink: _Sink,
    stamp: int,
    sources: dict[str, str],
    bar: Progress,
) -> None:
    for parts in sorted(_with_parents(files)):
        name = "/".join(parts)
        entry = files.get(name)
        if entry is None:
            sink.write(_header(name, tarfile.DIRTYPE, _DIR_MODE, 0, 0, 0, stamp))
            continue
        size = sizes[name]
        sink.write(_header(name, tarfile.REGTYPE, entry.mode, entry.uid, entry.gid, size, stamp))
        own = hashlib.sha256() if entry.hash_source else None
        _copy(entry, size, sink, own, bar)
        if own is not None:
            sources[entry.path] = "sha256:" + own.hexdigest()
        if size % _BLOCK:
            sink.write(bytes(_BLOCK - size % _BLOCK))
    sink.write(bytes(2 * _BLOCK))  # end-of-archive marker, as Go's archive/tar writes it


def _collect(entries: Iterable[LayerEntry]) -> dict[str, LayerEntry]:
    files: dict[str, LayerEntry] = {}
    for entry in entries:
        name = in_image_path(entry.path, "layer entry")
        if name in files:
            raise OCIError(f"layer entry {entry.path!r} given twice")
        if not 0 <= entry.mode <= 0o7777:
            raise OCIError(f"layer entry {entry.path!r}: mode {entry.mode:#o} is not 0..0o7777")
        if entry.uid < 0 or entry.gid < 0:
            raise OCIError(f"layer entry {entry.path!r}: negative uid/gid")
        files[name] = entry
    for name in files:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in files:
                raise OCIError(f"layer entry {parent!r} is a file but {name!r} lies under it")
    return files


def _with_parents(files: dict[str, LayerEntry]) -> set[tuple[str, ...]]:
    # Sorting component tuples puts every directory before its contents.
    paths: set[tuple[str, ...]] = set()
    for name in files:
        parts = tuple(name.split("/"))
        for depth in range(1, len(parts) + 1):
            paths.add(parts[:depth])
    return paths


def _header(name: str, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""  # names would tie the layer to the build machine's users
    info.size = size
    info.mtime = mtime
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _source_size(entry: LayerEntry) -> int:
    if isinstance(entry.source, bytes | bytearray | memoryview):
        return len(entry.source)
    try:
        stat = os.stat(entry.source)
    except OSError as exc:
        raise OCIError(
            f"cannot read layer source: {exc.strerror or exc}",
            Location(path=os.fspath(entry.source)),
        ) from None
    if not Path(entry.source).is_file():
        raise OCIError("layer source is not a regular file", Location(path=os.fspath(entry.source)))
    return stat.st_size


def _copy(
    entry: LayerEntry, size: int, sink: _Sink, own: hashlib._Hash | None, bar: Progress
) -> None:
    if isinstance(entry.source, bytes | bytearray | memoryview):
        sink.write(bytes(entry.source))
        if own is not None:
            own.update(entry.source)
        return
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    left = size
    try:
        with open(entry.source, "rb") as file:
            while left:
                got = file.readinto(view[: min(left, _CHUNK)])
                if not got:
                    break
                sink.write(view[:got])
                if own is not None:
                    own.update(view[:got])
                left -= got
                bar.advance(got)
            extra = file.read(1)
    except OSError as exc:
        raise OCIError(
            f"cannot read layer source: {exc.strerror or exc}",
            Location(path=os.fspath(entry.source)),
        ) from None
    if left or extra:
        # The tar header already promised `size` bytes; anything else would corrupt the layer.
        raise OCIError(
            f"file changed size while being written into the layer (expected {size} bytes)",
            Location(path=os.fspath(entry.source), offset=size - left),
        )


def _compressor(compression: str, level: int | None) -> _Compressor:
    if compression not in COMPRESSIONS:
        raise OCIError(f"unknown layer compression {compression!r} (gzip, zstd or none)")
    if compression == "none":
        return _Identity()
    chosen = DEFAULT_LEVELS[compression] if level is None else level
    if compression == "gzip":
        if not 0 <= chosen <= 9:
            raise OCIError(f"gzip level {chosen} is not 0..9")
        # wbits 31: a gzip wrapper written by zlib itself, mtime 0 and no file name, so the
        # header carries nothing from the build machine.
        return zlib.compressobj(chosen, zlib.DEFLATED, 31)
    try:
        import zstandard
    except ImportError:
        raise OCIError("zstd layers need the 'zstandard' package (pip install zstandard)") from None
    if not 1 <= chosen <= 22:
        raise OCIError(f"zstd level {chosen} is not 1..22")
    compressor: _Compressor = zstandard.ZstdCompressor(level=chosen).compressobj()
    return compressor


class _Sink:
    """Hash the tar stream, compress it, hash and write what comes out."""

    def __init__(self, out: BinaryIO, compressor: _Compressor) -> None:
        self._out = out
        self._compressor = compressor
        self._identity = isinstance(compressor, _Identity)
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()
        self._tar_size = 0
        self._blob_size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._tar_hash.update(data)
        self._tar_size += len(data)
        self._emit(data if self._identity else self._compressor.compress(data))

    def _emit(self, data: bytes | memoryview) -> None:
        if data:
            if not self._identity:  # uncompressed: the blob digest is the diff_id
                self._blob_hash.update(data)
            self._blob_size += len(data)
            self._out.write(data)

    def close(self) -> LayerStats:
        self._emit(self._compressor.flush())
        diff_id = "sha256:" + self._tar_hash.hexdigest()
        digest = diff_id if self._identity else "sha256:" + self._blob_hash.hexdigest()
        return LayerStats(digest, self._blob_size, diff_id, self._tar_size)


def layer_bound(entries: Sequence[LayerEntry]) -> int:
    """An upper bound of a layer's blob: its files, a header per file and the tar's padding;
    compression only shrinks it (incompressible data grows by under 0.1 %)."""
    size = 0
    for entry in entries:
        data = entry.source
        try:
            n = len(data) if isinstance(data, bytes) else os.stat(data).st_size
        except OSError:
            n = 0  # writing it says what is wrong with it
        size += 1024 + n + n // 512
    return size + (1 << 20)
