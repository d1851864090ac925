"""A blob as a stream to read, while it downloads: a pull unpacks a layer as its bytes arrive,
so that the model is written once and nothing reads it back.

``open_blob`` runs ``ImageSource.fetch`` (verification, Range resumes and retries included) in a
thread whose output goes through a bounded queue to the reader. End of stream is reported only
once the fetch verified the whole blob's size and digest; a failed fetch raises its error in the
reader. A fetch that starts over from byte 0 (a registry that ignored a Range request) is
followed: the bytes the reader already has are skipped, not given twice.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, BinaryIO, cast

from harness.oci import Descriptor

from ._download import Prefix

if TYPE_CHECKING:  # _source imports _pull, which streams its blobs through here
    from ._source import ImageSource

__all__ = ["BlobStream", "open_blob", "open_stream"]

_QUEUED = 32  # pieces of up to 1 MiB (fetch_blob's read size): bounded memory
_EOF = object()


class _Cancelled(Exception):
    """The reader went away: the fetch stops (not an OSError, which the fetch would retry)."""


class _PipeWriter:
    """The file ``fetch`` writes to: ``tell``/``seek``/``truncate`` as fetch_blob uses them."""

    def __init__(
        self, pieces: queue.Queue[object], cancelled: threading.Event, offset: int
    ) -> None:
        self._pieces = pieces
        self._cancelled = cancelled
        self._position = offset  # where fetch believes it writes
        self._delivered = offset  # bytes handed to the reader (a prefix: before this stream)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset > self._delivered:
            raise ValueError("a blob stream only seeks back to bytes it delivered")
        self._position = offset
        return offset

    def truncate(self, size: int | None = None) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def write(self, data: bytes) -> int:
        length = len(data)
        skip = max(0, min(self._delivered - self._position, length))
        self._position += length
        if skip < length:
            self._put(bytes(data[skip:]) if skip else data)
            self._delivered = self._position
        return length

    def _put(self, item: object) -> None:
        while True:
            if self._cancelled.is_set():
                raise _Cancelled()
            try:
                self._pieces.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


class BlobStream:
    """The reading end: ``read(size)`` as a file; raises the fetch's error if it failed."""

    def __init__(self, pieces: queue.Queue[object]) -> None:
        self._pieces = pieces
        self._buffer = memoryview(b"")
        self._whole: bytes | None = None  # the current piece while none of it was read
        self._done = False
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        while not self._buffer and not self._done:
            item = self._pieces.get()
            if item is _EOF:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                assert isinstance(item, bytes)
                self._buffer, self._whole = memoryview(item), item
        if size >= len(self._buffer) and self._whole is not None:
            piece = self._whole  # the fetch's own piece, whole: no copy
        else:
            piece = bytes(self._buffer[:size])
        self._whole = None
        self._buffer = self._buffer[len(piece) :]
        self.count += len(piece)
        return piece


def open_blob(
    source: ImageSource, descriptor: Descriptor, prefix: Prefix | None = None
) -> AbstractContextManager[BlobStream]:
    """The blob's bytes as they are fetched (after ``prefix``, which the caller has);
    leaving the block early stops the fetch."""
    return open_stream(
        lambda out: source.fetch(descriptor, out, prefix),
        descriptor.digest[:19],
        prefix.size if prefix is not None else 0,
    )


@contextmanager
def open_stream(
    fetch: Callable[[BinaryIO], None], name: str, offset: int = 0
) -> Iterator[BlobStream]:
    """What ``fetch`` writes to the file it is given (verified before it returns), to read;
    ``offset``: the bytes before it the reader already has (a fetch starting over from 0 skips
    them)."""
    pieces: queue.Queue[object] = queue.Queue(_QUEUED)
    cancelled = threading.Event()
    writer = _PipeWriter(pieces, cancelled, offset)

    def run() -> None:
        try:
            fetch(cast(BinaryIO, writer))
            writer._put(_EOF)
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the reader, which raises it
            with suppress(_Cancelled):
                writer._put(exc)

    # In the caller's context: a sibling transfer's failure stops this fetch too (_parallel).
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name=f"fetch {name}", daemon=True)
    thread.start()
    try:
        yield BlobStream(pieces)
    except BaseException:
        cancelled.set()
        # A fetch blocked on a silent registry ends at its read timeout; it writes nothing
        # more (the queue refuses it), so the caller need not wait for it.
        thread.join(timeout=5)
        raise
    cancelled.set()
    thread.join()
