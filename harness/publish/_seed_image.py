"""The seed's image as built, with the test results added as manifest annotations.

Annotations live in the manifest, so the image config (and the model ID, its digest) stays
exactly what the builder wrote; only the manifest digest changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from harness.distribution import Artifact
from harness.oci import Image, canonical_json

__all__ = ["seed_artifact"]


def seed_artifact(layout: Path, image: Image, annotations: Mapping[str, str]) -> Artifact:
    """``image`` (read from ``layout``) with ``annotations`` merged into its manifest."""
    built = Artifact.from_layout(layout, image.ref_name)
    document = json.loads(built.data)
    if not annotations:
        return built
    merged = {**(document.get("annotations") or {}), **annotations}
    document.pop("annotations", None)
    document["annotations"] = dict(sorted(merged.items()))
    return Artifact(
        built.media_type, canonical_json(document), built.blobs, built.children, built.artifact_type
    )
