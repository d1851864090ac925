"""Downloading a blob: verified as the bytes go by, resumed with a Range request after a
broken connection, refused as soon as it grows past the size its descriptor states.

A download can also start past byte 0 (``Prefix``): the bytes a killed run left, already hashed
by the caller from its own copy; the rest is asked for with a Range request, and the digest
checked at the end covers both (a wrong prefix ends in DigestError).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from urllib3.exceptions import HTTPError

from harness._progress import Progress, progress
from harness.errors import DigestError, RegistryError
from harness.oci import Descriptor

from ._http import Http, registry_error
from ._parallel import stop_point
from ._ranges import first_range_end, range_start, ranged_pieces
from ._token import Scope

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["Prefix", "fetch_blob"]

_READ = 1 << 20


@dataclass(frozen=True)
class Prefix:
    """The first ``size`` bytes of a blob, already written just before ``out``'s position and
    fed into ``hash`` (of the digest's algorithm)."""

    size: int
    hash: _Hash


def fetch_blob(
    http: Http,
    repository: str,
    descriptor: Descriptor,
    out: BinaryIO,
    scope: Scope,
    prefix: Prefix | None = None,
) -> None:
    """Download a blob into ``out``; resumes with Range after a broken connection. With
    ``prefix``, only the bytes after it are asked for (all of them if the registry ignores the
    Range request: ``out`` is then rewound to the blob's start)."""
    with progress(f"pull {descriptor.digest[7:19]}", descriptor.size) as bar:
        _fetch(http, repository, descriptor, out, scope, bar, prefix)


def _fetch(
    http: Http,
    repository: str,
    descriptor: Descriptor,
    out: BinaryIO,
    scope: Scope,
    bar: Progress,
    prefix: Prefix | None,
) -> None:
    where = f"{http.where}/{repository}@{descriptor.digest}"
    path = f"/v2/{repository}/blobs/{descriptor.digest}"
    algorithm = descriptor.digest.split(":", 1)[0]
    got = prefix.size if prefix is not None else 0
    start = out.tell() - got
    digest = prefix.hash if prefix is not None else hashlib.new(algorithm)
    if got:
        bar.update(got)
    failures = 0
    policy = http.options.retry
    while True:
        headers = {"Accept-Encoding": "identity"}
        # A big blob asks for its first segment only: a 206 answer starts the ranged download.
        first_end = first_range_end(http.options, got, descriptor.size)
        if first_end is not None:
            headers["Range"] = f"bytes={got}-{first_end}"
        elif got:
            headers["Range"] = f"bytes={got}-"
        response = http.request("GET", path, scope=scope, headers=headers, stream=True)
        pieces: Iterator[bytes] = iter(functools.partial(response.read, _READ), b"")
        if response.status == 200 and got:
            # No range support: start over.
            out.seek(start)
            out.truncate()
            digest, got = hashlib.new(algorithm), 0
            bar.update(0)
        elif response.status == 206 and range_start(response) != got:
            # A range we did not ask for: start over, but within the retry budget (a registry
            # that always answers so would otherwise be asked forever).
            content_range = response.headers.get("Content-Range", "none")
            response.release_conn()
            failures += 1
            if failures >= policy.attempts:
                raise RegistryError(
                    f"answers 206 with Content-Range {content_range!r} for a request from byte"
                    f" {got} ({failures} attempts)",
                    where,
                )
            out.seek(start)
            out.truncate()
            digest, got = hashlib.new(algorithm), 0
            bar.update(0)
            time.sleep(policy.wait(failures - 1))
            continue
        elif response.status not in (200, 206):
            raise registry_error("GET", http.url(path), response, where)
        elif response.status == 206 and first_end is not None:
            pieces = ranged_pieces(http, path, scope, response, got, descriptor.size, where)
        try:
            for piece in pieces:
                got += len(piece)
                if got > descriptor.size:
                    response.release_conn()
                    raise DigestError(
                        f"blob is larger than the {descriptor.size} bytes its descriptor states",
                        where,
                    )
                digest.update(piece)
                out.write(piece)
                bar.advance(len(piece))
                stop_point()
            response.release_conn()
            break
        except (HTTPError, OSError) as exc:
            failures += 1
            if failures >= policy.attempts:
                raise RegistryError(
                    f"download broke off after {got} of {descriptor.size} bytes "
                    f"({failures} attempts): {type(exc).__name__}",
                    where,
                ) from None
            time.sleep(policy.wait(failures - 1))
        finally:
            # A ranged download's workers stop now, not when the generator is collected.
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
    actual = f"{algorithm}:{digest.hexdigest()}"
    if got != descriptor.size or actual != descriptor.digest:
        raise DigestError(
            f"blob content does not match its descriptor: {got} bytes hashing to {actual}, "
            f"expected {descriptor.size} bytes with digest {descriptor.digest}",
            where,
        )
