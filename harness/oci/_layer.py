"""Write one reproducible tar layer, streaming: hashing, compressing and writing in one pass.

A GGUF file is hundreds of megabytes, so file data is never held in memory, and the tar is never
written out uncompressed: each chunk updates the diff_id hash, goes through the compressor and
updates the blob hash on its way to disk.

A big file's data starts at a 4096-byte-aligned offset of the tar (a pax ``comment`` record pads
its header), so that on a reflink filesystem (XFS, btrfs) an uncompressed layer can share the
file's disk blocks instead of holding a second copy (docs/image-format.md).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from harness._fs import clone_stamp
from harness._progress import Progress, progress
from harness.errors import Location, OCIError

from ._layer_sink import ALIGN, COMPRESSIONS, LayerStats, Sink, compressor
from ._media import Descriptor

__all__ = [
    "COMPRESSIONS",
    "TAR_LAYOUT",
    "Layer",
    "LayerEntry",
    "LayerStats",
    "default_mtime",
    "in_image_path",
    "layer_bound",
    "write_layer",
]

_CHUNK = 1 << 20
_BLOCK = 512
# Only members this big are aligned: the padding costs up to _PAD_MAX bytes (about 2.3 KB on
# average) in every copy of the layer, registries included, which on a 1 MiB file is 0.2 %;
# the configs, templates and tokenizers under it would save a few blocks at a higher price.
_ALIGN_MIN = 1 << 20
_PAD_MAX = ALIGN + _BLOCK  # a gap of one block takes a pax header of two, so 4096 more
_PAD_KEY = "comment"  # a standard pax keyword every reader ignores
#: The tar's layout, for caches that keep layers by their files: the same files made other bytes
#: before big members were aligned, and a cache must not hand those out as today's.
TAR_LAYOUT = "pax-aligned-4096-from-1MiB"
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
    """Write the tar of ``entries`` to ``out``, compressed; return both digests and sizes.

    Uncompressed, into a file on a reflink filesystem, a big file's data is cloned from its
    source on the same filesystem (the blocks are shared, not written; the source is still
    read for the digests); anywhere else it is copied. The bytes are the same.
    """
    files = _collect(entries)
    sink = Sink(out, compressor(compression, level))
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
    sink: Sink,
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
        # Aligned in every layer format: one tar, whatever compresses it, so the diff_id (and
        # the image config) is the same; compressed, the padding costs a few bytes.
        at = sink.tar_size if size >= _ALIGN_MIN else None
        header = _header(name, tarfile.REGTYPE, entry.mode, entry.uid, entry.gid, size, stamp, at)
        sink.write(header)
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


def _header(
    name: str,
    kind: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    align_at: int | None = None,
) -> bytes:
    """The member's header; written at tar offset ``align_at``, padded so that the data after
    it starts at a multiple of ALIGN (the padding depends on offsets only: same bytes on every
    machine and filesystem)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""  # names would tie the layer to the build machine's users
    info.size = size
    info.mtime = mtime
    plain = _tobuf(info)
    if align_at is None or (align_at + len(plain)) % ALIGN == 0:
        return plain
    target = len(plain) + (-(align_at + len(plain)) % ALIGN)
    info.pax_headers = {_PAD_KEY: ""}
    while len(_tobuf(info)) > target:
        target += ALIGN
    # The shortest filler reaching the target: the header grows a block at a time, so it is
    # exactly the target (every length here is a multiple of 512).
    low, high = 0, target
    while low < high:
        middle = (low + high) // 2
        info.pax_headers = {_PAD_KEY: "x" * middle}
        if len(_tobuf(info)) >= target:
            high = middle
        else:
            low = middle + 1
    info.pax_headers = {_PAD_KEY: "x" * low}
    padded = _tobuf(info)
    assert len(padded) == target, (len(padded), target)
    return padded


def _tobuf(info: tarfile.TarInfo) -> bytes:
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
    entry: LayerEntry, size: int, sink: Sink, own: hashlib._Hash | None, bar: Progress
) -> None:
    if isinstance(entry.source, bytes | bytearray | memoryview):
        sink.write(bytes(entry.source))
        if own is not None:
            own.update(entry.source)
        return
    view = memoryview(bytearray(_CHUNK))
    left = size
    try:
        with open(entry.source, "rb") as file:
            stamp = clone_stamp(file.fileno())
            body = size - size % ALIGN if size >= _ALIGN_MIN else 0
            # Cloned, the body is still read (from the source, most likely still in the page
            # cache): for the digests and the source's own hash, not to be written.
            shared = body if body and sink.clone(file.fileno(), body) else 0
            while left:
                done = size - left
                # up to the end of the shared part, then up to the end of the file
                limit = shared - done if done < shared else left
                got = file.readinto(view[: min(limit, _CHUNK)])
                if not got:
                    break
                if done < shared:
                    sink.account(view[:got])
                else:
                    sink.write(view[:got])
                if own is not None:
                    own.update(view[:got])
                left -= got
                bar.advance(got)
            extra = file.read(1)
            # What was cloned and what was hashed are the same bytes only if the file did not
            # change in between (the plain copy writes what it hashes, so needs no such check).
            changed = shared and clone_stamp(file.fileno()) != stamp
    except OSError as exc:
        raise OCIError(
            f"cannot read layer source: {exc.strerror or exc}",
            Location(path=os.fspath(entry.source)),
        ) from None
    if left or extra or changed:
        # The tar header already promised `size` bytes; anything else would corrupt the layer.
        raise OCIError(
            f"file changed while being written into the layer (expected {size} bytes)",
            Location(path=os.fspath(entry.source), offset=size - left),
        )


def layer_bound(entries: Sequence[LayerEntry]) -> int:
    """An upper bound of a layer's blob: its files, a header per file (with the alignment's
    padding) and the tar's padding; compression only shrinks it (incompressible data grows by
    under 0.1 %)."""
    size = 0
    for entry in entries:
        data = entry.source
        try:
            n = len(data) if isinstance(data, bytes) else os.stat(data).st_size
        except OSError:
            n = 0  # writing it says what is wrong with it
        size += 1024 + _PAD_MAX + n + n // 512
    return size + (1 << 20)
