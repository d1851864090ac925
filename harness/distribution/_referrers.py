"""OCI referrers: attach an artifact to a manifest (its ``subject``) and list what refers to one.

oras-py has neither ``artifactType`` nor the referrers API, so this is written here. Registries
with the referrers API (distribution 3, zot, Harbor, ghcr) index a manifest with a ``subject``
themselves. Older ones (distribution 2.8, Debian's) get the OCI 1.1 tag-schema fallback: an index
tagged ``sha256-<hex of the subject>`` that lists the referrers, which every OCI 1.1 client
(oras, skopeo, cosign, regctl) also reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import NotFoundError
from harness.oci import OCI_INDEX, Descriptor, canonical_json

from ._artifact import Artifact, parse_descriptor
from ._client import RegistryClient
from ._push import PushResult, push
from ._reference import Reference

__all__ = [
    "EMPTY_CONFIG",
    "Attached",
    "attach",
    "fallback_tag",
    "list_referrers",
    "referrer_artifact",
]

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_DATA = b"{}"
EMPTY_CONFIG = Descriptor(
    EMPTY_MEDIA_TYPE, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", 2
)


@dataclass(frozen=True)
class Attached:
    push: PushResult  # the referrer manifest's push
    via: str  # "referrers-api" or "tag-schema"
    index_updated: bool  # the fallback index had to be written


def referrer_artifact(
    subject: Descriptor,
    artifact_type: str,
    payload: bytes,
    payload_media_type: str,
    annotations: Mapping[str, str] | None = None,
) -> Artifact:
    """An artifact manifest (empty config, one layer) whose ``subject`` is ``subject``."""
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    layer = Descriptor(payload_media_type, digest, len(payload))
    return Artifact.manifest(
        (EMPTY_CONFIG, EMPTY_DATA),
        [(layer, payload)],
        annotations=annotations,
        artifact_type=artifact_type,
        subject=Descriptor(subject.media_type, subject.digest, subject.size),
    )


def fallback_tag(digest: str) -> str:
    """The referrers tag schema: ``sha256:abc…`` → ``sha256-abc…``."""
    algorithm, hex_digest = digest.split(":", 1)
    return f"{algorithm}-{hex_digest}"[:128]


def attach(
    client: RegistryClient, repository: str, subject: Descriptor, artifact: Artifact
) -> Attached:
    """Push ``artifact`` (whose manifest names ``subject``) and make it findable as a referrer."""
    ref = Reference(client.registry, repository, None, None)
    result = push(artifact, ref, client=client)
    if client.referrers(repository, subject.digest) is not None:
        return Attached(result, "referrers-api", False)
    tag = fallback_tag(subject.digest)
    try:
        current = client.get_manifest(repository, tag, accept=(OCI_INDEX,)).json()
    except NotFoundError:
        current = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    entries: list[dict[str, Any]] = [
        e for e in current.get("manifests") or [] if isinstance(e, dict)
    ]
    if any(e.get("digest") == artifact.digest for e in entries):
        return Attached(result, "tag-schema", False)
    entry = artifact.descriptor().to_json()
    annotations = artifact.json().get("annotations")
    if isinstance(annotations, dict) and annotations:
        entry["annotations"] = annotations
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*entries, entry]}
    client.put_manifest(repository, tag, canonical_json(index), OCI_INDEX)
    return Attached(result, "tag-schema", True)


def list_referrers(
    client: RegistryClient, repository: str, digest: str, artifact_type: str | None = None
) -> list[Descriptor]:
    """Referrers of ``digest`` (API, else the tag schema), optionally of one artifact type."""
    found = client.referrers(repository, digest)
    if found is None:
        try:
            index = client.get_manifest(repository, fallback_tag(digest), accept=(OCI_INDEX,))
        except NotFoundError:
            return []
        found = [
            parse_descriptor(item, f"manifests[{i}]", fallback_tag(digest))
            for i, item in enumerate(index.json().get("manifests") or [])
        ]
    if artifact_type is not None:
        found = [d for d in found if d.artifact_type == artifact_type]
    return found
