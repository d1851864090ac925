"""Uploading blob bytes: in chunks that resume where the registry says it stopped.

A broken upload is resumed from the offset the registry reports for the session (GET on the
upload URL); a registry that lost the session (restarted, or one whose state token no longer
matches its data, as distribution 2.x after a half-received chunk) gets a fresh session from
byte 0. Blobs no larger than one chunk go up in a single PUT, and so does the last chunk.

Across processes, ``_journal`` keeps the session of each blob larger than a chunk: a later push
of the same blob to the same repository asks the registry where it stands and goes on from
there. Between chunks an upload asks whether the person wants it to stop (``request_stop``): it
then raises ``TransferStopped`` with the session journaled, the chunk in flight acknowledged.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from harness._progress import Progress, progress
from harness.errors import DigestError, RegistryError, TransferStopped
from harness.oci import Descriptor

from . import _journal
from ._http import Body, Http, Response, registry_error
from ._parallel import stop_point, stop_requested
from ._token import Scope

__all__ = ["BlobSource", "upload_blob"]

BlobSource = Path | bytes
Report = Callable[[str], None]
_READ = 1 << 20


def upload_blob(
    http: Http,
    repository: str,
    descriptor: Descriptor,
    source: BlobSource,
    scope: Scope,
    report: Report | None = None,
) -> int:
    """Upload ``source`` as ``descriptor``; returns the bytes sent, resends included.
    ``report`` gets one line when a session from an earlier run is resumed or refused."""
    say = report or (lambda _line: None)
    with progress(f"push {descriptor.digest[7:19]}", descriptor.size) as bar:
        return _Upload(http, repository, descriptor, source, scope, bar, say).run()


class _Upload:
    def __init__(
        self,
        http: Http,
        repository: str,
        descriptor: Descriptor,
        source: BlobSource,
        scope: Scope,
        bar: Progress,
        say: Report,
    ) -> None:
        self.bar = bar
        self.say = say
        self.http = http
        self.repository = repository
        self.descriptor = descriptor
        self.source = source
        self.scope = scope
        self.where = f"{http.where}/{repository}"
        self.sent = 0
        self.failures = 0
        self.location = ""
        self.offset = 0

    def run(self) -> int:
        size = self.descriptor.size
        chunk = max(self.http.options.chunk_size, 1)
        # Only a blob of several chunks has sessions worth keeping across processes.
        self.journaled = size > chunk
        self._open()
        while True:
            try:
                if stop_requested():
                    raise TransferStopped(
                        f"stopped after {self.offset} of {size} bytes of "
                        f"{self.descriptor.digest}; run again to resume",
                        self.where,
                    )
                if size - self.offset <= chunk:
                    # One PUT carries the rest of the blob (all of a config or a small layer):
                    # one round trip fewer than a PATCH and an empty PUT.
                    self._finish(self._body(self.offset, size - self.offset))
                    if self.journaled:
                        self._forget()
                    return self.sent
                self._patch(chunk)
            except _Broken as broken:
                self._recover(broken)

    def _open(self) -> None:
        """Go on with the journaled session of an earlier run if the registry still has it."""
        if not self.journaled:
            self._start()
            return
        digest, size = self.descriptor.digest, self.descriptor.size
        session, why = _journal.load(self.http.host, self.repository, digest, size)
        if why:
            self.say(why)
        if session is not None:
            self.location = session.location
            offset = self._resume_offset()
            if offset is not None and offset <= size:
                self.offset = offset
                self._journal()
                self.say(f"resuming {digest[:19]} at {offset} of {size} bytes")
                return
            self.say(
                f"the registry no longer has the upload of {digest[:19]} an earlier run left at "
                f"{session.offset} of {size} bytes; starting over"
            )
        self._start()

    def _start(self) -> None:
        path = f"/v2/{self.repository}/blobs/uploads/"
        response = self.http.request("POST", path, scope=self.scope)
        location = response.headers.get("Location")
        if response.status != 202 or not location:
            raise registry_error("POST", self.http.url(path), response, self.where)
        self.location, self.offset = location, 0
        self._journal()

    def _journal(self) -> None:
        if self.journaled:
            _journal.save(
                _journal.Session(
                    self.http.host,
                    self.repository,
                    self.descriptor.digest,
                    self.descriptor.size,
                    self.location,
                    self.offset,
                )
            )

    def _forget(self) -> None:
        _journal.forget(self.http.host, self.repository, self.descriptor.digest)

    def _patch(self, length: int) -> None:
        end = self.offset + length - 1
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{self.offset}-{end}",
        }
        response = self._send("PATCH", self.location, headers, self._body(self.offset, length))
        if response.status != 202:
            self._judge("PATCH", response)
        self.location = response.headers.get("Location") or self.location
        self.offset = _range_end(response.headers.get("Range"), end + 1)
        self._journal()

    def _finish(self, body: Body) -> None:
        separator = "&" if "?" in self.location else "?"
        url = f"{self.location}{separator}digest={urllib.parse.quote(self.descriptor.digest)}"
        headers = {"Content-Type": "application/octet-stream"}
        response = self._send("PUT", url, headers, body)
        if response.status == 201:
            stated = response.headers.get("Docker-Content-Digest")
            if stated and stated != self.descriptor.digest:
                raise DigestError(
                    f"registry stored blob {self.descriptor.digest} as {stated}", self.where
                )
            return
        self._judge("PUT", response)

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body | None) -> Response:
        try:
            return self.http.request(
                method, url, scope=self.scope, headers=headers, body=body, retry=False
            )
        except RegistryError as exc:
            stopped = isinstance(exc, TransferStopped)
            if stopped or exc.status is not None or not _is_connection_error(exc):
                raise
            raise _Broken(str(exc)) from None

    def _judge(self, method: str, response: Response) -> NoReturn:
        """Raise _Broken for what a retry may fix, else the registry's error."""
        status = response.status
        if status >= 500 or status in (404, 408, 416, 429):
            # 404/416: the session is gone or out of step; a fresh one starts over.
            error = registry_error(method, self.http.url(self.location), response, self.where)
            raise _Broken(str(error))
        if status == 400:
            error = registry_error(method, self.http.url(self.location), response, self.where)
            if error.code in ("BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID"):
                raise _Broken(str(error))
            raise error
        raise registry_error(method, self.http.url(self.location), response, self.where)

    def _recover(self, broken: _Broken) -> None:
        policy = self.http.options.retry
        self.failures += 1
        if self.failures >= policy.attempts:
            raise RegistryError(
                f"upload of {self.descriptor.digest} failed after {self.failures} attempts: "
                f"{broken.reason}",
                self.where,
            )
        time.sleep(policy.wait(self.failures - 1))
        if self.location:
            resumed = self._resume_offset()
            if resumed is not None and resumed <= self.descriptor.size:
                self.offset = resumed
                self._journal()
                return
        self._start()

    def _resume_offset(self) -> int | None:
        """Where the registry's session stands, or None if it has no usable session."""
        try:
            response = self.http.request("GET", self.location, scope=self.scope)
        except RegistryError:
            return None
        location = response.headers.get("Location")
        if response.status != 204:
            response.release_conn()
            return None
        if location:
            self.location = location
        return _range_end(response.headers.get("Range"), 0)

    def _body(self, offset: int, length: int) -> Body:
        def chunks() -> Iterator[bytes]:
            self.bar.update(offset)  # a resend starts where the registry said it stopped
            for piece in _slices(self.source, offset, length):
                stop_point()
                self.sent += len(piece)
                self.bar.advance(len(piece))
                yield piece

        return Body(length, chunks)


class _Broken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _slices(source: BlobSource, offset: int, length: int) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source[offset : offset + length]
        return
    with open(source, "rb") as file:
        file.seek(offset)
        left = length
        while left:
            piece = file.read(min(_READ, left))
            if not piece:
                raise RegistryError(f"{source} is shorter than its descriptor says")
            left -= len(piece)
            yield piece


def _range_end(header: str | None, default: int) -> int:
    """The next offset from a ``Range: 0-<last>`` answer (distribution writes "0-0" for none)."""
    if not header or "-" not in header:
        return default
    try:
        last = int(header.rsplit("-", 1)[1])
    except ValueError:
        return default
    return 0 if last <= 0 and default == 0 else last + 1


def _is_connection_error(exc: RegistryError) -> bool:
    return exc.status is None
