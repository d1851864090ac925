"""What a push sends: a manifest (or index) as exact bytes, and where each blob it needs lies.

``Artifact.from_layout`` reads one from an OCI image layout (what ``harness.builder`` writes);
``Artifact.manifest`` builds one from descriptors (what ``harness.publish`` converts to). The
bytes are canonical JSON, so the same content always has the same digest: a re-push of an
unchanged model finds everything in place and sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import RegistryError
from harness.oci import (
    INDEXES,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    OCIError,
    blob_path,
    canonical_json,
    check_blob_size,
    layout_index,
    read_blob,
)

from ._transfer import BlobSource

__all__ = ["INDEX_TYPES", "Artifact", "BlobSource", "parse_descriptor"]

INDEX_TYPES = INDEXES
_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
T = TypeVar("T")


@dataclass(frozen=True)
class Artifact:
    """A manifest ready to push: ``data`` is sent as is; ``blobs`` maps each digest it needs
    (config, layers) to its descriptor and source; an index lists its manifests in ``children``.
    """

    media_type: str
    data: bytes
    blobs: Mapping[str, tuple[Descriptor, BlobSource]] = field(default_factory=dict)
    children: tuple[Artifact, ...] = ()
    artifact_type: str | None = None

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(
        self,
        annotations: Mapping[str, str] | None = None,
        platform: Mapping[str, str] | None = None,
    ) -> Descriptor:
        return Descriptor(
            self.media_type, self.digest, self.size, annotations, platform, self.artifact_type
        )

    def json(self) -> dict[str, Any]:
        value = json.loads(self.data)
        assert isinstance(value, dict)
        return value

    @classmethod
    def manifest(
        cls,
        config: tuple[Descriptor, BlobSource],
        layers: Sequence[tuple[Descriptor, BlobSource]],
        *,
        annotations: Mapping[str, str] | None = None,
        artifact_type: str | None = None,
        subject: Descriptor | None = None,
    ) -> Artifact:
        """An OCI image manifest over ``config`` and ``layers`` (canonical JSON)."""
        document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if artifact_type is not None:
            document["artifactType"] = artifact_type
        document["config"] = config[0].to_json()
        document["layers"] = [descriptor.to_json() for descriptor, _ in layers]
        if subject is not None:
            document["subject"] = subject.to_json()
        if annotations:
            document["annotations"] = dict(annotations)
        blobs = {config[0].digest: config}
        blobs.update({descriptor.digest: (descriptor, source) for descriptor, source in layers})
        return cls(OCI_MANIFEST, canonical_json(document), blobs, (), artifact_type)

    @classmethod
    def from_layout(cls, layout: str | Path, tag: str | None = None) -> Artifact:
        """The image tagged ``tag`` in an OCI layout (the only one when ``tag`` is None); an
        index is taken whole, with every manifest it lists."""
        root = Path(layout)
        entries = _oci(lambda: layout_index(root))
        if tag is not None:
            entries = [d for d in entries if (d.annotations or {}).get(REF_NAME) == tag]
            if not entries:
                raise RegistryError(f"no image tagged {tag!r}", str(root))
        if len(entries) != 1:
            raise RegistryError(
                f"the layout holds {len(entries)} images; name one by its tag", str(root)
            )
        return _from_blob(root, entries[0], depth=0)


def parse_descriptor(value: Any, key: str, where: str) -> Descriptor:
    """A descriptor from JSON, refusing anything a path or a request could be built from
    unsafely (a digest like ``sha256:../../x``)."""
    if not isinstance(value, dict):
        raise RegistryError(f"{key}: not a descriptor object", where)
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise RegistryError(f"{key}.mediaType: missing", where)
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise RegistryError(f"{key}.digest: {digest!r} is not a sha256/sha512 digest", where)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{key}.size: {size!r} is not a size", where)
    annotations = value.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())
    ):
        raise RegistryError(f"{key}.annotations: not a string map", where)
    platform = value.get("platform")
    artifact_type = value.get("artifactType")
    return Descriptor(
        media_type,
        digest,
        size,
        annotations or None,
        platform if isinstance(platform, dict) else None,
        artifact_type if isinstance(artifact_type, str) else None,
    )


def _from_blob(root: Path, descriptor: Descriptor, depth: int) -> Artifact:
    if depth > 3:
        raise RegistryError("indexes nested too deeply", str(root))
    data = _oci(lambda: read_blob(root, descriptor))
    document = json.loads(data)  # read_layout's reader took it apart already: well formed
    if not isinstance(document, dict):
        raise RegistryError(f"blob {descriptor.digest} is not a JSON object", str(root))
    path = blob_path(root, descriptor.digest)
    media_type = document.get("mediaType") or descriptor.media_type
    artifact_type = document.get("artifactType")
    artifact_type = artifact_type if isinstance(artifact_type, str) else None
    if media_type in INDEX_TYPES:
        children = tuple(
            _from_blob(root, parse_descriptor(item, f"manifests[{i}]", str(path)), depth + 1)
            for i, item in enumerate(document.get("manifests") or [])
        )
        return Artifact(media_type, data, {}, children, artifact_type)
    blobs: dict[str, tuple[Descriptor, BlobSource]] = {}
    items = [("config", document.get("config"))]
    items += [(f"layers[{i}]", item) for i, item in enumerate(document.get("layers") or [])]
    for key, item in items:
        blob = parse_descriptor(item, key, str(path))
        where = blob_path(root, blob.digest)
        try:
            check_blob_size(where, blob)
        except OCIError as error:
            raise RegistryError(f"{key}: {error.message}", str(root)) from None
        blobs[blob.digest] = (blob, where)
    return Artifact(media_type, data, blobs, (), artifact_type)


def _oci(read: Callable[[], T]) -> T:
    """One of harness.oci's layout readers, its error told as a push's."""
    try:
        return read()
    except OCIError as error:
        raise RegistryError(str(error)) from None
