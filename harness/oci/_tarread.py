"""Stream a layer blob as tar members, verifying its digest (and diff_id) as the bytes go by.

The blob is read once: the compressed bytes feed the digest check, the decompressed bytes feed
the diff_id check and the tar parser. Verification completes when the whole blob has been read,
so the iterator drains the blob after the last member before it reports success.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import re
import tarfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from harness.errors import Location, OCIError

from ._layout import check_blob_size
from ._media import Descriptor, layer_compression

__all__ = ["MAX_EXTENDED_HEADER", "Chunks", "iter_layer"]

_CHUNK = 1 << 20
_KEEP = 2 * _CHUNK + 1024
#: A layer bigger than EXPANSION_FLOOR uncompressed may not exceed MAX_EXPANSION times its
#: compressed size: quantized weights compress to ~0.94, text to ~0.2; 100x is only reached by
#: runs of zeros, i.e. a decompression bomb (docs/limits.md). The store applies the same caps.
MAX_EXPANSION = 100.0
EXPANSION_FLOOR = 64 << 20
#: A pax header or GNU long name holds a member's long name, times and xattrs: a few hundred
#: bytes. tarfile reads each one whole into memory, so it is bounded (docs/limits.md).
MAX_EXTENDED_HEADER = 1 << 20
# What Python's pax reader may spend on runs of digits, in (digits in a run)**2 summed: before
# 3.11.10 / 3.12.6 it searches the header with a regex that backtracks over every run of digits
# (CVE-2024-6232), so that a gzip of 1 KiB holding 64 KiB of digits costs minutes.
_PAX_DIGIT_WORK = 1 << 24
_PAX_LENGTH = re.compile(rb"([0-9]{1,20}) ")
_DIGITS = re.compile(rb"[0-9]+")
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_LONG_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


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
    """Pass reads through, hashing (unless ``algorithm`` is None) and counting the bytes."""

    def __init__(self, inner: _Readable, algorithm: str | None) -> None:
        self._inner = inner
        self.hash = hashlib.new(algorithm) if algorithm else None
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        if self.hash is not None:
            self.hash.update(data)
        self.count += len(data)
        return data

    def digest(self) -> str:
        assert self.hash is not None
        return f"{self.hash.name}:{self.hash.hexdigest()}"


class _TarBytes(_Hashing):
    """The uncompressed tar, also keeping its last few chunks: tarfile stops quietly at a bad
    header, so the bytes from where it stopped are checked to be the zero end-of-archive.
    Reading past ``cap`` bytes is an error: the layer is a decompression bomb."""

    def __init__(self, inner: _Readable, algorithm: str | None, cap: int, what: str) -> None:
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


class _Replay:
    """A stream that gives back bytes already read from ``inner`` before reading on."""

    def __init__(self, data: bytes, inner: _Readable) -> None:
        self._data = data
        self._inner = inner

    def read(self, size: int = -1, /) -> bytes:
        if not self._data:
            return self._inner.read(size)
        head, self._data = self._data[:size], self._data[size:]
        return head + (self._inner.read(size - len(head)) if len(head) < size else b"")

    def tell(self) -> int:
        return cast(IO[bytes], self._inner).tell() - len(self._data)


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo whose extended headers are bounded in size and, for pax, checked to be well
    framed records Python's pax reader parses in linear time, before it parses them.

    ``_proc_member`` is tarfile's documented hook for subclasses; a refusal is a ReadError, so
    that iter_layer reports it as a malformed tar naming the header's offset.
    """

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type not in _PAX_TYPES + _LONG_TYPES:
            return super()._proc_member(tar)  # type: ignore[misc,no-any-return]
        where = f"the {'pax' if self.type in _PAX_TYPES else 'GNU long name'} header at tar byte"
        if self.size > MAX_EXTENDED_HEADER:
            raise tarfile.ReadError(
                f"{where} {self.offset} holds {self.size} bytes, over the {MAX_EXTENDED_HEADER}"
                " allowed"
            )
        if self.type in _LONG_TYPES:
            return super()._proc_member(tar)  # type: ignore[misc,no-any-return]
        stream = cast(_Readable, tar.fileobj)
        records = stream.read(self._block(self.size))  # type: ignore[attr-defined]
        problem = _pax_problem(records[: self.size])
        if problem is not None:
            raise tarfile.ReadError(f"{where} {self.offset} {problem}")
        tar.fileobj = _Replay(records, stream)  # type: ignore[assignment]
        try:
            return super()._proc_member(tar)  # type: ignore[misc,no-any-return]
        finally:
            tar.fileobj = stream  # type: ignore[assignment]


def _pax_problem(records: bytes) -> str | None:
    """Why a pax header's records are refused: "LENGTH KEY=VALUE\n" each, as POSIX frames them
    (what Python 3.12.6 checks), and no digits for the old reader's regex to backtrack over."""
    at = 0
    while at < len(records) and records[at] != 0:
        match = _PAX_LENGTH.match(records, at)
        end = at + int(match.group(1)) if match else at
        if (
            match is None
            or end - at < 5  # the shortest record: "5 k=\n"
            or end > len(records)
            or records[end - 1] != 0x0A
            or records[match.end() : end].startswith(b"=")
            or b"=" not in records[match.end() : end]
        ):
            return f"has a malformed record at its byte {at}"
        at = end
    if sum(len(run) ** 2 for run in _DIGITS.findall(records)) > _PAX_DIGIT_WORK:
        return "holds runs of digits long enough to stall Python's tar reader (CVE-2024-6232)"
    return None


Chunks = Callable[[], Iterator[bytes]]


def iter_layer(
    path: Path,
    descriptor: Descriptor,
    diff_id: str | None = None,
    file: BinaryIO | None = None,
) -> Iterator[tuple[tarfile.TarInfo, Chunks]]:
    """Yield each member of the layer with a function that streams its data, in tar order.

    Call the function before asking for the next member (the tar is read as a stream). After
    the last member the blob is read to its end and its digest, size and (when given) diff_id
    are checked; any mismatch or malformed byte is an OCIError naming the blob. ``file``: the
    blob at ``path`` opened by the caller, read from its start (the caller closes it).
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
    with contextlib.nullcontext(file) if file is not None else open(path, "rb") as raw:
        blob = _Hashing(raw, algorithm)
        # An uncompressed layer's tar is its blob: the one hash serves both checks (a second
        # sha256 would cost as much as reading it again).
        same = compression == "none" and diff_algorithm == algorithm
        tar_bytes = _TarBytes(
            _decompressor(compression, blob),
            None if same else diff_algorithm,
            cap,
            f"layer {descriptor.digest}",
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
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=tar_bytes, mode="r|", bufsize=_CHUNK, tarinfo=_BoundedTarInfo
            ) as tar:
                for member in tar:
                    # A member's bytes are bounded like the layer's: a size past the cap, or a
                    # sparse map (whose holes Python's reader fills with zeros, and with an empty
                    # map never finishes), could be read forever from a few kilobytes.
                    if member.sparse is not None:
                        raise fail(ValueError(f"{member.name!r} is a sparse file"), member.offset)
                    if member.size > cap:
                        raise OCIError(
                            f"layer {descriptor.digest}: {member.name!r} claims {member.size}"
                            f" bytes, past the {cap} the layer may expand to"
                            f" ({MAX_EXPANSION:g}x its compressed size): refused as a"
                            " decompression bomb",
                            Location(path),
                        )
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
    tar_digest = blob.digest() if same else tar_bytes.digest()
    if diff_id is not None and tar_digest != diff_id:
        raise OCIError(
            f"layer {descriptor.digest}: uncompressed tar hashes to {tar_digest}, "
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
