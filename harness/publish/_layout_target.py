"""Publishing into an OCI image layout: the local default target, no registry needed.

Every format and tag goes into one layout; the report is attached as in a registry without the
referrers API: an index tagged ``sha256-<hex>`` of the subject lists the report's manifest. The
layout is refused before a byte is written when its file system cannot hold what is not
hard-linked into it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from harness._fs import ensure_room
from harness.distribution import Artifact, fallback_tag, referrer_artifact
from harness.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    LayoutWriter,
    canonical_json,
    platform_of,
)

from ._evidence import Evidence
from ._spec import Published, PublishSpec, tag_for

__all__ = ["write_layout_target"]


def write_layout_target(
    directory: Path,
    artifacts: Mapping[str, Artifact],
    spec: PublishSpec,
    evidence: Evidence,
    report_type: str,
) -> list[Published]:
    wanted = {
        tag_for(tag, fmt, spec.formats): artifact.digest
        for fmt, artifact in artifacts.items()
        for tag in spec.tags
    }
    existing = _tags(directory)
    if wanted and all(existing.get(name) == digest for name, digest in wanted.items()):
        # Already published exactly so: write nothing, as a registry that has it sends nothing.
        return [
            Published(f"oci:{directory}:{name}", fmt, artifact.digest, 0, False, "kept")
            for fmt, artifact in artifacts.items()
            for name in (tag_for(tag, fmt, spec.formats) for tag in spec.tags)
        ]
    ensure_room(directory.parent, _room(directory, artifacts, evidence), f"oci:{directory}")
    items: list[Published] = []
    with LayoutWriter(directory) as writer:
        for fmt, artifact in artifacts.items():
            descriptor = _add(writer, artifact)
            for tag in spec.tags:
                name = tag_for(tag, fmt, spec.formats)
                writer.tag(descriptor, name)
                items.append(
                    Published(f"oci:{directory}:{name}", fmt, artifact.digest, 0, True, None)
                )
            if evidence.report is not None:
                referrer = referrer_artifact(
                    descriptor, report_type, evidence.report, "application/json"
                )
                index = {
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": [_add(writer, referrer).to_json()],
                }
                stored = writer.add_blob(canonical_json(index), OCI_INDEX)
                writer.tag(stored, fallback_tag(descriptor.digest))
                items = [
                    Published(i.reference, i.format, i.digest, 0, True, "tag-schema")
                    if i.digest == artifact.digest
                    else i
                    for i in items
                ]
    return items


def _tags(directory: Path) -> dict[str, str]:
    """ref name -> manifest digest of a layout already there (empty when there is none)."""
    try:
        index = json.loads((directory / "index.json").read_text())
        return {
            m["annotations"][REF_NAME]: m["digest"]
            for m in index.get("manifests", [])
            if REF_NAME in (m.get("annotations") or {})
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _add(writer: LayoutWriter, artifact: Artifact) -> Descriptor:
    for child in artifact.children:
        _add(writer, child)
    for descriptor, source in artifact.blobs.values():
        if isinstance(source, bytes):
            writer.add_blob(source, descriptor.media_type)
        else:
            writer.add_stored_blob(source, descriptor)
    stored = writer.add_blob(artifact.data, artifact.media_type)
    platform = _platform(artifact)
    return Descriptor(
        stored.media_type, stored.digest, stored.size, None, platform, artifact.artifact_type
    )


def _platform(artifact: Artifact) -> dict[str, str] | None:
    """An image manifest's platform from its config (the seed's image: linux/amd64), for the
    index entry: what docker, containerd and skopeo choose an image by. Artifacts have none."""
    if artifact.media_type != OCI_MANIFEST or artifact.children:
        return None
    config = artifact.json().get("config")
    if not isinstance(config, dict) or config.get("mediaType") != OCI_CONFIG:
        return None
    found = artifact.blobs.get(str(config.get("digest")))
    if found is None:
        return None
    source = found[1]
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        value = json.loads(data)
    except (OSError, ValueError):
        return None
    return platform_of(value) if isinstance(value, dict) else None


def _room(directory: Path, artifacts: Mapping[str, Artifact], evidence: Evidence) -> int:
    """The bytes the layout takes on its file system: blobs given as bytes, and files that
    cannot be hard-linked there (another file system); each digest once, as the layout keeps
    it; plus the report and its referrer manifest and index."""
    device = _device(directory)
    sizes: dict[str, int] = {}
    for artifact in artifacts.values():
        for node in _tree(artifact):
            sizes[node.digest] = node.size
            for digest, (descriptor, source) in node.blobs.items():
                if isinstance(source, bytes):
                    sizes[digest] = len(source)
                elif _device(source) != device:
                    sizes[digest] = descriptor.size
    report = 2 * len(evidence.report) + (64 << 10) if evidence.report is not None else 0
    return sum(sizes.values()) + report * len(artifacts)


def _tree(artifact: Artifact) -> Iterator[Artifact]:
    yield artifact
    for child in artifact.children:
        yield from _tree(child)


def _device(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.stat(path).st_dev
