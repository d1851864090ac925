"""The Docker Model Runner artifact (config v0.1) of a seed image.

Docker's layers carry no file paths, so only what it has a media type for goes in: the main
GGUF, a projector, the chat template and license files. A drafter, adapters and other files
stay in the seed's image and the ModelPack artifact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from harness.distribution import Artifact
from harness.oci import Descriptor, canonical_json

from ._facts import ModelFacts
from ._files import ImageFiles, ModelFile

__all__ = ["DMR_CONFIG", "dmr_artifact", "dmr_config"]

DMR_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
_MEDIA = {
    "model": "application/vnd.docker.ai.gguf.v3",
    "projector": "application/vnd.docker.ai.mmproj",
    "chat-template": "application/vnd.docker.ai.chat.template.jinja",
    "license": "application/vnd.docker.ai.license",
}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _files(files: ImageFiles) -> list[tuple[ModelFile, str]]:
    chosen = [(f, _MEDIA[f.role]) for f in files.by_role("model", "projector", "chat-template")]
    chosen += [
        (f, _MEDIA["license"])
        for f in files.by_role("doc")
        if f.name.lower().startswith(("license", "licence", "copying"))
    ]
    return chosen


def dmr_config(files: ImageFiles, facts: ModelFacts) -> dict[str, Any]:
    config: dict[str, Any] = {
        "format": "gguf",
        "quantization": facts.filetype,
        "parameters": facts.parameters_label.replace(" ", ""),
        "architecture": facts.architecture,
        "size": _size(sum(f.size for f in files.by_role("model", "projector"))),
        "gguf": {k: str(v) for k, v in facts.metadata.items() if not isinstance(v, dict | list)},
    }
    if facts.context_size:
        config["context_size"] = facts.context_size
    document: dict[str, Any] = {"config": config}
    if files.created:
        document["descriptor"] = {"created": files.created}
    document["rootfs"] = {"type": "rootfs", "diff_ids": [f.digest for f, _ in _files(files)]}
    return document


def dmr_artifact(files: ImageFiles, facts: ModelFacts, annotations: Mapping[str, str]) -> Artifact:
    data = canonical_json(dmr_config(files, facts))
    config = Descriptor(DMR_CONFIG, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    layers = [
        (Descriptor(media, f.digest, f.size, _annotations(f)), f.host) for f, media in _files(files)
    ]
    return Artifact.manifest(
        (config, data), layers, annotations={**facts.annotations(), **annotations}
    )


def _annotations(file: ModelFile) -> dict[str, str]:
    # Docker's v0.2 layers name their path with ModelPack's annotation; v0.1 readers ignore it.
    return {"org.cncf.model.filepath": file.path, "org.opencontainers.image.title": file.name}


def _size(count: int) -> str:
    value = float(count)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.2f}{unit}" if unit != "B" else f"{count}B"
        value /= 1024
    return f"{count}B"
