"""One big blob over several connections: consecutive ranges fetched at once, taken in order.

A registry's blob URL often redirects to object storage that caps each connection's rate, so a
40 GB model over one stream can take an hour where four streams take a quarter of it. Here
``RegistryOptions.range_streams`` workers each fetch the next ``range_segment`` bytes with a
Range request while the caller takes the segments in order: the caller alone hashes and writes,
so the digest stays one sequential pass and the file (or the layer being unpacked) sees the
bytes exactly as one stream would give them. At most ``range_streams`` segments are fetched or
held at once (64 MiB by default): memory stays bounded for any blob size.

Used only where the registry answered the first bounded Range with 206: one that ignores Range
(200) gives the whole blob on that same response, read as one stream.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from urllib3.exceptions import HTTPError

from harness.errors import DigestError, RegistryError

from ._http import Http, Response
from ._options import RegistryOptions
from ._parallel import stop_point
from ._token import Scope

__all__ = ["first_range_end", "range_start", "ranged_pieces"]

_READ = 1 << 20


def first_range_end(options: RegistryOptions, start: int, size: int) -> int | None:
    """The last byte of the first segment to ask for, or None for one stream (a blob too
    small to gain from several, or ranges turned off)."""
    segment = max(options.range_segment, 1)
    if options.range_streams <= 1 or size - start < 2 * segment:
        return None
    return start + segment - 1


def range_start(response: Response) -> int | None:
    """The first byte a 206 answer carries (``Content-Range: bytes 100-199/200``)."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def ranged_pieces(
    http: Http, path: str, scope: Scope, first: Response, start: int, size: int, where: str
) -> Iterator[bytes]:
    """The blob's bytes from ``start`` to ``size``, in order; ``first`` is the 206 answer to
    the first segment's request. Each segment retries on its own; one that still fails raises
    RegistryError and stops the others."""
    options = http.options
    segment = max(options.range_segment, 1)
    bounds = [(b, min(b + segment, size)) for b in range(start, size, segment)]
    cancelled = threading.Event()
    context = contextvars.copy_context()  # a sibling transfer's failure stops these too

    def fetch(index: int, response: Response | None) -> list[bytes]:
        begin, end = bounds[index]
        return _Segment(http, path, scope, begin, end, where, cancelled).fetch(response)

    pool = ThreadPoolExecutor(options.range_streams, thread_name_prefix="range")
    pending: deque[Future[list[bytes]]] = deque()
    submitted = 0
    try:
        while submitted < min(options.range_streams, len(bounds)):
            response = first if submitted == 0 else None
            pending.append(pool.submit(context.copy().run, fetch, submitted, response))
            submitted += 1
        while pending:
            pieces = pending.popleft().result()
            if submitted < len(bounds):
                pending.append(pool.submit(context.copy().run, fetch, submitted, None))
                submitted += 1
            yield from pieces
    finally:
        cancelled.set()
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


class _Cancelled(Exception):
    """The reader stopped (an error elsewhere, or it had what it wanted)."""


class _Segment:
    def __init__(
        self,
        http: Http,
        path: str,
        scope: Scope,
        begin: int,
        end: int,
        where: str,
        cancelled: threading.Event,
    ) -> None:
        self.http, self.path, self.scope, self.where = http, path, scope, where
        self.begin, self.end = begin, end
        self.cancelled = cancelled

    def fetch(self, response: Response | None) -> list[bytes]:
        pieces: list[bytes] = []
        have = 0
        want = self.end - self.begin
        failures = 0
        policy = self.http.options.retry
        while True:
            try:
                if response is None:
                    response = self._request(self.begin + have)
                while have < want:
                    self._check()
                    # One byte more than is left: a server sending past the range is caught.
                    piece = response.read(min(_READ, want - have + 1))
                    if not piece:
                        break
                    have += len(piece)
                    if have > want:
                        response.release_conn()
                        raise DigestError(
                            f"bytes {self.begin}-{self.end - 1}: the registry sent more than asked",
                            self.where,
                        )
                    pieces.append(piece)
                response.release_conn()
                if have == want:
                    return pieces
                raise OSError("the connection ended before the range did")
            except (HTTPError, OSError) as exc:
                failures += 1
                if failures >= policy.attempts:
                    raise RegistryError(
                        f"bytes {self.begin}-{self.end - 1} broke off after {have} bytes "
                        f"({failures} attempts): {type(exc).__name__}",
                        self.where,
                    ) from None
                response = None
                time.sleep(policy.wait(failures - 1))

    def _request(self, offset: int) -> Response:
        self._check()
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={offset}-{self.end - 1}"}
        response = self.http.request(
            "GET", self.path, scope=self.scope, headers=headers, stream=True
        )
        if response.status != 206 or range_start(response) != offset:
            content_range = response.headers.get("Content-Range", "none")
            response.release_conn()
            raise RegistryError(
                f"answers {response.status} with Content-Range {content_range!r} for bytes "
                f"{offset}-{self.end - 1}, after answering an earlier range",
                self.where,
            )
        return response

    def _check(self) -> None:
        stop_point()
        if self.cancelled.is_set():
            raise _Cancelled()
