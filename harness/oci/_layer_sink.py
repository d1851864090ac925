"""The one pass under a layer: hash the tar, compress it, hash and write what comes out; or, for
an uncompressed tar on a reflink filesystem, share a file's blocks and only hash its bytes.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from harness._fs import CLONE_BLOCK, clone_range
from harness.errors import OCIError

from ._media import OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD

__all__ = ["ALIGN", "COMPRESSIONS", "DEFAULT_LEVELS", "LayerStats", "Sink", "compressor"]

COMPRESSIONS = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}
# Levels chosen by benchmarks/layer_compression.py: quantized weights barely compress, so the
# fast levels cost almost nothing in size and save most of the time.
DEFAULT_LEVELS = {"gzip": 1, "zstd": 3}
_CHUNK = 1 << 20
# A member's data at a multiple of the filesystem block can share the source file's blocks.
# Part of the layer format (digests depend on it): never follow a machine's own block size.
ALIGN = CLONE_BLOCK


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


def compressor(compression: str, level: int | None) -> _Compressor:
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


class Sink:
    """Hash the tar stream, compress it, hash and write what comes out (or, uncompressed, share
    a file's blocks, hashing the bytes as its source reads)."""

    def __init__(self, out: BinaryIO, compressor: _Compressor) -> None:
        self._out = out
        self._compressor = compressor
        self._identity = isinstance(compressor, _Identity)
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()
        self._blob_size = 0
        self.tar_size = 0
        # Only an uncompressed tar keeps a member's bytes where the file's blocks can be shared.
        self._clones = self._identity and _is_file(out)

    def clone(self, src_fd: int, length: int) -> bool:
        """Append the first ``length`` bytes of ``src_fd`` by sharing its blocks; the caller then
        hands each of those bytes to ``account``. False when the filesystem refuses, and from
        then on for the rest of the layer (it would refuse each file the same way)."""
        if not self._clones:
            return False
        self._out.flush()
        at = self._out.tell()
        if at % ALIGN == 0 and clone_range(src_fd, 0, length, self._out.fileno(), at):
            self._out.seek(at + length)
            return True
        self._clones = False
        return False

    def account(self, data: bytes | memoryview) -> None:
        """Hash bytes ``clone`` already placed (uncompressed: the blob's digest is the tar's)."""
        self._tar_hash.update(data)
        self.tar_size += len(data)
        self._blob_size += len(data)

    def write(self, data: bytes | memoryview) -> None:
        self._tar_hash.update(data)
        self.tar_size += len(data)
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
        return LayerStats(digest, self._blob_size, diff_id, self.tar_size)


def _is_file(out: BinaryIO) -> bool:
    try:
        out.fileno()
        return out.seekable()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False
