"""Stream a layer blob as tar members, verifying its digest (and diff_id) as the bytes go by.

The blob is read once: the compressed bytes feed the digest check, the decompressed bytes feed
the diff_id check and the tar parser. Verification completes when the whole blob has been read,
so the iterator drains the blob after the last member before it reports success.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import tarfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Protocol, cast

from harness.errors import Location, OCIError

from ._layout import check_blob_size
from ._media import Descriptor, layer_compression

__all__ = ["Chunks", "iter_layer"]

_CHUNK = 1 << 20
_KEEP = 2 * _CHUNK + 1024
#: A layer bigger than EXPANSION_FLOOR uncompressed may not exceed MAX_EXPANSION times its
#: compressed size: quantized weights compress to ~0.94, text to ~0.2; 100x is only reached by
#: runs of zeros, i.e. a decompression bomb (docs/limits.md). The store applies the same caps.
MAX_EXPANSION = 100.0
EXPANSION_FLOOR = 64 << 20


def expansion_cap(compressed: int) -> int:
    """The most bytes ``compressed`` bytes of a layer or an archive may expand to."""
    return max(EXPANSION_FLOOR, int(MAX_EXPANSION * max(compressed, 1)))


def _zstd_error() -> type[Exception]:
    try:
        import zstandard
    except ImportError:
        return zlib.error  # stands in: nothing can raise a zstd error without the package
    error: type[Exception] = zstandard.ZstdError
    return error


_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, _zstd_error())


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Hashing:
    """Pass reads through, hashing and counting the bytes."""

    def __init__(self, inner: _Readable, algorithm: str) -> None:
        self._inner = inner
        self.hash = hashlib.new(algorithm)
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        self.hash.update(data)
        self.count += len(data)
        return data

    def digest(self) -> str:
        return f"{self.hash.name}:{self.hash.hexdigest()}"


class _TarBytes(_Hashing):
    """The uncompressed tar, also keeping its last few chunks: tarfile stops quietly at a bad
    header, so the bytes from where it stopped are checked to be the zero end-of-archive.
    Reading past ``cap`` bytes is an error: the layer is a decompression bomb."""

    def __init__(self, inner: _Readable, algorithm: str, cap: int, what: str) -> None:
        super().__init__(inner, algorithm)
        self._recent: deque[tuple[int, bytes]] = deque()
        self._held = 0
        self._cap = cap
        self._what = what

    def read(self, size: int = -1, /) -> bytes:
        start = self.count
        data = super().read(size)
        if self.count > self._cap:
            raise OCIError(
                f"{self._what} expands past {self._cap} bytes ({MAX_EXPANSION:g}x its compressed"
                " size): refused as a decompression bomb"
            )
        if data:
            self._recent.append((start, data))
            self._held += len(data)
            # tarfile reads at most one buffer (_CHUNK) ahead of where it stops.
            while self._held - len(self._recent[0][1]) >= _KEEP:
                self._held -= len(self._recent.popleft()[1])
        return data

    def first_nonzero_since(self, offset: int) -> int | None:
        """Offset of the first non-zero byte delivered at or after ``offset``, if any."""
        for start, data in self._recent:
            if start + len(data) <= offset:
                continue
            skip = max(0, offset - start)
            stripped = data[skip:].lstrip(b"\0")
            if stripped:
                return start + len(data) - len(stripped)
        return None


Chunks = Callable[[], Iterator[bytes]]


def iter_layer(
    path: Path, descriptor: Descriptor, diff_id: str | None = None
) -> Iterator[tuple[tarfile.TarInfo, Chunks]]:
    """Yield each member of the layer with a function that streams its data, in tar order.

    Call the function before asking for the next member (the tar is read as a stream). After
    the last member the blob is read to its end and its digest, size and (when given) diff_id
    are checked; any mismatch or malformed byte is an OCIError naming the blob.
    """
    compression = layer_compression(descriptor.media_type)
    if compression is None:
        raise OCIError(
            f"layer {descriptor.digest} is a {descriptor.media_type!r}, not a tar layer",
            Location(path),
        )
    check_blob_size(path, descriptor)
    algorithm = descriptor.digest.split(":", 1)[0]
    diff_algorithm = diff_id.split(":", 1)[0] if diff_id else "sha256"
    cap = expansion_cap(descriptor.size)
    with open(path, "rb") as raw:
        blob = _Hashing(raw, algorithm)
        tar_bytes = _TarBytes(
            _decompressor(compression, blob), diff_algorithm, cap, f"layer {descriptor.digest}"
        )

        def fail(exc: BaseException, at: int | None = None) -> OCIError:
            _raise_digest_mismatch(path, descriptor)
            return OCIError(
                f"layer {descriptor.digest} is not a valid {compression} tar: {exc} "
                f"(at tar byte {tar_bytes.count if at is None else at})",
                Location(path),
            )

        def chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
            try:
                data = tar.extractfile(member)
                while data is not None and (chunk := data.read(_CHUNK)):
                    yield chunk
            except _READ_ERRORS as exc:
                raise fail(exc) from None

        try:
            with tarfile.open(fileobj=tar_bytes, mode="r|", bufsize=_CHUNK) as tar:  # type: ignore[call-overload]
                for member in tar:
                    yield member, functools.partial(chunks, tar, member)
                end = tar.offset  # where the end-of-archive marker (or a bad header) starts
            # After the marker only zero padding may follow; it still counts for the digests.
            junk = tar_bytes.first_nonzero_since(end)
            while junk is None and (chunk := tar_bytes.read(_CHUNK)):
                if chunk.count(0) != len(chunk):
                    junk = tar_bytes.count - len(chunk.lstrip(b"\0"))
        except _READ_ERRORS as exc:
            raise fail(exc) from None
        if junk is not None:
            raise fail(ValueError("malformed header or stray data after the last member"), junk)
    if blob.digest() != descriptor.digest or blob.count != descriptor.size:
        raise OCIError(f"blob digest mismatch: content hashes to {blob.digest()}", Location(path))
    if diff_id is not None and tar_bytes.digest() != diff_id:
        raise OCIError(
            f"layer {descriptor.digest}: uncompressed tar hashes to {tar_bytes.digest()}, "
            f"but the config's diff_id is {diff_id}",
            Location(path),
        )


def _decompressor(compression: str, blob: _Hashing) -> _Readable:
    if compression == "none":
        return blob
    if compression == "gzip":
        return gzip.GzipFile(fileobj=cast(IO[bytes], blob), mode="rb")
    try:
        import zstandard
    except ImportError:
        raise OCIError("zstd layers need the 'zstandard' package (pip install zstandard)") from None
    reader: _Readable = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], blob), read_across_frames=True
    )
    return reader


def _raise_digest_mismatch(path: Path, descriptor: Descriptor) -> None:
    """A corrupt blob usually shows first as a bad tar or stream; say what is really wrong."""
    algorithm = descriptor.digest.split(":", 1)[0]
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    actual = f"{algorithm}:{digest.hexdigest()}"
    if actual != descriptor.digest:
        raise OCIError(f"blob digest mismatch: content hashes to {actual}", Location(path))
