"""The OCI distribution API for one registry: manifests, blobs, tags, mounts, referrers.

Every manifest read is checked against the digest it was asked by (or the digest the registry
states for a tag); every blob read goes through ``_transfer.fetch_blob``, which checks its size
and digest. Uploads go through ``_transfer.upload_blob`` (chunked, resumable, also by a later run).
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from harness.errors import DigestError, RegistryError
from harness.oci import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Descriptor

from ._artifact import parse_descriptor
from ._download import Prefix, fetch_blob
from ._http import Body, Http, Response, registry_error
from ._journal import forget as forget_upload
from ._options import RegistryOptions
from ._reference import Reference
from ._token import Scope
from ._transfer import BlobSource, upload_blob

__all__ = ["MANIFEST_TYPES", "ManifestBlob", "RegistryClient"]

# What a manifest GET accepts, in order of preference.
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
# The distribution spec lets registries refuse manifests above 4 MiB; nothing real comes close.
_MAX_MANIFEST = 4 << 20


@dataclass(frozen=True)
class ManifestBlob:
    """A manifest (or index) as the registry served it: exact bytes, verified digest."""

    media_type: str
    digest: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.data)
        except ValueError:
            raise RegistryError(f"manifest {self.digest} is not JSON") from None
        if not isinstance(value, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return value


class RegistryClient:
    """One registry (``host[:port]``); use as a context manager or call ``close``."""

    def __init__(self, registry: str, options: RegistryOptions | None = None) -> None:
        self.registry = registry
        self.options = options or RegistryOptions()
        host = Reference(registry, "x").api_host
        self.http = Http(host, self.options, registry)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- manifests ------------------------------------------------------------------------

    def get_manifest(
        self, repository: str, target: str, accept: Sequence[str] = MANIFEST_TYPES
    ) -> ManifestBlob:
        """The manifest at ``target`` (tag or digest), its digest verified."""
        path = f"/v2/{repository}/manifests/{target}"
        response = self.http.request(
            "GET", path, scope=_pull(repository), headers={"Accept": ", ".join(accept)}, stream=True
        )
        where = f"{self.registry}/{repository}:{target}"
        if response.status != 200:
            raise self._error("GET", path, response, repository)
        data = response.read(_MAX_MANIFEST + 1)
        response.release_conn()
        if len(data) > _MAX_MANIFEST:
            raise RegistryError(f"manifest larger than {_MAX_MANIFEST} bytes", where)
        algorithm = target.split(":", 1)[0] if ":" in target else "sha256"
        actual = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        expected = target if ":" in target else response.headers.get("Docker-Content-Digest")
        if expected and expected.startswith(algorithm + ":") and actual != expected:
            raise DigestError(
                f"manifest content hashes to {actual}, but the registry said {expected}", where
            )
        media_type = _media_type(response.headers.get("Content-Type"), data)
        return ManifestBlob(media_type, actual, data)

    def head_manifest(self, repository: str, target: str) -> Descriptor | None:
        """The manifest's descriptor from a HEAD (no body), or None if absent."""
        path = f"/v2/{repository}/manifests/{target}"
        response = self.http.request(
            "HEAD", path, scope=_pull(repository), headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._error("HEAD", path, response, repository)
        digest = response.headers.get("Docker-Content-Digest")
        size = response.headers.get("Content-Length")
        if not digest or size is None:
            return None  # a registry that does not say: callers fall back to GET
        return Descriptor(response.headers.get("Content-Type", ""), digest, int(size))

    def put_manifest(
        self, repository: str, target: str, data: bytes, media_type: str
    ) -> tuple[str, bool]:
        """PUT a manifest by tag or digest; returns its digest and whether the registry
        processed its ``subject`` (the OCI-Subject header: the referrers API is supported)."""
        path = f"/v2/{repository}/manifests/{target}"
        response = self.http.request(
            "PUT",
            path,
            scope=_push(repository),
            headers={"Content-Type": media_type},
            body=Body.of(data),
        )
        if response.status not in (200, 201):
            raise self._error("PUT", path, response, repository)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        stated = response.headers.get("Docker-Content-Digest")
        if stated and stated.startswith("sha256:") and stated != digest:
            raise DigestError(f"registry stored the manifest as {stated}, we sent {digest}")
        return digest, bool(response.headers.get("OCI-Subject"))

    def delete_manifest(self, repository: str, digest: str) -> None:
        path = f"/v2/{repository}/manifests/{digest}"
        response = self.http.request("DELETE", path, scope=_push(repository, "delete"))
        if response.status not in (200, 202, 404):
            raise self._error("DELETE", path, response, repository)

    def tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (following the registry's pagination)."""
        path: str | None = f"/v2/{repository}/tags/list?n=1000"
        found: list[str] = []
        while path:
            response = self.http.request("GET", path, scope=_pull(repository))
            if response.status == 404:
                return found
            if response.status != 200:
                raise self._error("GET", path, response, repository)
            found += json.loads(response.data).get("tags") or []
            path = _next_link(response.headers.get("Link"))
        return found

    def referrers(self, repository: str, digest: str) -> list[Descriptor] | None:
        """The referrers API's list for ``digest``; None when the registry has no such API."""
        path = f"/v2/{repository}/referrers/{digest}"
        response = self.http.request(
            "GET", path, scope=_pull(repository), headers={"Accept": OCI_INDEX}
        )
        if response.status == 404 and not _is_oci_error(response.data):
            return None  # "404 page not found": the endpoint, not the manifest, is missing
        if response.status in (400, 404, 405):
            return None
        if response.status != 200:
            raise self._error("GET", path, response, repository)
        index = ManifestBlob(OCI_INDEX, "", response.data).json()
        where = f"{self.registry}/{repository} referrers of {digest}"
        return [
            parse_descriptor(item, f"manifests[{i}]", where)
            for i, item in enumerate(index.get("manifests") or [])
        ]

    def _error(self, method: str, path: str, response: Response, repository: str) -> RegistryError:
        return registry_error(
            method, self.http.url(path), response, f"{self.registry}/{repository}"
        )

    # --- blobs ----------------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """HEAD the blob: its size if the repository has it, else None."""
        path = f"/v2/{repository}/blobs/{digest}"
        response = self.http.request("HEAD", path, scope=_pull(repository))
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._error("HEAD", path, response, repository)
        return int(response.headers.get("Content-Length", "-1"))

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Ask the registry to link ``digest`` from ``source`` (same registry); True if done."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        path = f"/v2/{repository}/blobs/uploads/?{query}"
        scope = (*_push(repository), f"repository:{source}:pull")
        response = self.http.request("POST", path, scope=scope)
        if response.status == 201:
            return True
        location = response.headers.get("Location")
        if response.status == 202 and location:
            # The registry opened an ordinary upload instead; close it rather than leave it.
            self.http.request("DELETE", location, scope=_push(repository), retry=False)
            return False
        if response.status in (401, 403, 404):
            return False  # no read access to the source: upload instead
        raise self._error("POST", path, response, repository)

    def upload_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        source: BlobSource,
        report: Callable[[str], None] | None = None,
    ) -> int:
        """Upload a blob the registry does not have; returns the bytes sent (counting resends).
        A session an earlier run journaled is resumed; ``report`` hears of it."""
        return upload_blob(self.http, repository, descriptor, source, _push(repository), report)

    def forget_upload(self, repository: str, digest: str) -> None:
        """Drop the journaled session of a blob the repository holds (or mounted) by now."""
        forget_upload(self.http.host, repository, digest)

    def fetch_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        out: BinaryIO,
        prefix: Prefix | None = None,
    ) -> None:
        """Write the blob to ``out`` (at its current position, after ``prefix``), verifying
        size and digest."""
        fetch_blob(self.http, repository, descriptor, out, _pull(repository), prefix)


def _pull(repository: str) -> Scope:
    return (f"repository:{repository}:pull",)


def _push(repository: str, actions: str = "pull,push") -> Scope:
    return (f"repository:{repository}:{actions}",)


def _media_type(header: str | None, data: bytes) -> str:
    declared = None
    try:
        value = json.loads(data)
        declared = value.get("mediaType") if isinstance(value, dict) else None
    except ValueError:
        pass
    stated = (header or "").split(";", 1)[0].strip()
    if isinstance(declared, str) and declared:
        return declared
    return stated or OCI_MANIFEST


def _is_oci_error(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data).get("errors"), list)
    except (ValueError, AttributeError):
        return False


def _next_link(header: str | None) -> str | None:
    # Link: </v2/x/tags/list?last=a&n=1000>; rel="next"
    if not header or 'rel="next"' not in header:
        return None
    start, end = header.find("<"), header.find(">")
    return header[start + 1 : end] if 0 <= start < end else None
