"""Media types, descriptors, digests and the canonical JSON every blob we write is encoded in."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import Location, OCIError

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "IMAGE_MANIFESTS",
    "INDEXES",
    "LABEL_PREFIX",
    "MAX_LABELS",
    "MAX_LABEL_BYTES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "REF_NAME",
    "Descriptor",
    "canonical_json",
    "check_digest",
    "check_labels",
    "layer_compression",
    "sha256_digest",
    "shown",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
# Docker schema 2: what BuildKit writes by default, so what the seed's images carry.
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
REF_NAME = "org.opencontainers.image.ref.name"
#: The prefix of every label and annotation key the harness writes (its reverse-DNS name).
LABEL_PREFIX = "io.github.gguf-harness."

# Tar layer media type -> compression. Non-distributable and "foreign" layers are still tars.
_LAYER_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    DOCKER_LAYER_GZIP: "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
#: Labels and annotations are short text (BuildKit's and the seed's are under 1 KiB); these bound
#: what a hostile image config or manifest may make every reader hold and print (docs/limits.md).
MAX_LABELS = 4096
MAX_LABEL_BYTES = 64 << 10  # one key or one value, UTF-8
_SHOWN = 60  # characters of a hostile value quoted in a message


def layer_compression(media_type: str) -> str | None:
    """The compression ("gzip", "zstd", "none") of a tar layer media type; None if not a tar."""
    return _LAYER_COMPRESSION.get(media_type)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(value: object, key: str | None = None, location: Location | None = None) -> str:
    """``value`` if it is a digest we can verify; a strict pattern also keeps blob paths inside
    the layout (a digest like ``sha256:../../x`` is refused, not joined to a path)."""
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise OCIError(f"not a sha256/sha512 digest: {shown(value)}", location, key=key)
    return value


def check_labels(value: object, key: str, location: Location | None = None) -> dict[str, str]:
    """``value`` as a dict if it is a string-to-string object within MAX_LABELS entries of at
    most MAX_LABEL_BYTES per key and per value: image labels (``config.Labels``) and the
    ``annotations`` of manifests and descriptors. ``key`` names where it was found."""
    if not isinstance(value, Mapping):
        raise OCIError(f"not a string-to-string object: {shown(value)}", location, key=key)
    if len(value) > MAX_LABELS:
        raise OCIError(f"{len(value)} entries, over the {MAX_LABELS} allowed", location, key=key)
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise OCIError(f"not a string: {shown(text)}", location, key=f"{key}[{shown(name)}]")
        for part, what in ((name, "key"), (text, "value")):
            size = len(part.encode("utf-8", "surrogatepass"))
            if size > MAX_LABEL_BYTES:
                raise OCIError(
                    f"a {what} of {size} bytes, over the {MAX_LABEL_BYTES} allowed",
                    location,
                    key=f"{key}[{shown(name)}]",
                )
    return dict(value)


def shown(value: object) -> str:
    """A value read from a blob, for a message: quoted, and cut short when it is long."""
    if isinstance(value, str) and len(value) > _SHOWN:
        return f"{value[:_SHOWN]!r}... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"  # repr() of a huge one raises ValueError
    if isinstance(value, Mapping):
        return f"an object of {len(value)} entries"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return repr(value)


def canonical_json(value: Any) -> bytes:
    """Compact UTF-8 JSON in the dict's own key order: the same value always hashes the same.

    Keys are not sorted so that a record reads in the order its spec lists the fields; every
    writer here builds its dicts in a fixed order.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN or infinity: not JSON, and Go's encoder refuses them too
        raise OCIError(f"value cannot be written as JSON: {exc}") from None
    return text.encode("utf-8")


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a blob is, its digest and its size in bytes."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None
    platform: Mapping[str, Any] | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        result["size"] = self.size
        if self.artifact_type is not None:
            result["artifactType"] = self.artifact_type
        if self.platform is not None:
            result["platform"] = dict(self.platform)
        if self.annotations:
            result["annotations"] = dict(self.annotations)
        return result
