"""Publishing into an OCI image layout: the local default target, no registry needed.

Every format and tag goes into one layout; the report is attached as in a registry without the
referrers API: an index tagged ``sha256-<hex>`` of the subject lists the report's manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from harness.distribution import Artifact, fallback_tag, referrer_artifact
from harness.oci import OCI_INDEX, REF_NAME, Descriptor, LayoutWriter, canonical_json

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
    return Descriptor(
        stored.media_type, stored.digest, stored.size, None, None, artifact.artifact_type
    )
