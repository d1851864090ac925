"""The CNCF ModelPack artifact of a seed image, checked against our schema of its config.

One raw layer per file (``org.cncf.model.filepath`` says where it goes), GGUF weights first;
the config states what ModelPack can (family, parameter size, quantization, capabilities) and
the rest of the GGUF facts go into manifest annotations under our prefix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from harness.distribution import Artifact
from harness.errors import PublishError
from harness.oci import Descriptor, canonical_json

from ._facts import ModelFacts, param_size
from ._files import ImageFiles, ModelFile

__all__ = [
    "MODELPACK_ARTIFACT_TYPE",
    "MODELPACK_CONFIG",
    "modelpack_artifact",
    "modelpack_config",
    "validate_modelpack_config",
]

MODELPACK_ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
_WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
_DOC = "application/vnd.cncf.model.doc.v1.raw"
_MEDIA = {"doc": _DOC, "config": _WEIGHT_CONFIG, "chat-template": _WEIGHT_CONFIG}
_FLOATS = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}
_CAPABILITIES = {
    "text-to-text": (["text"], ["text"]),
    "embedding": (["text"], ["embedding"]),
    "image-to-text": (["text", "image"], ["text"]),
}


def modelpack_config(files: ImageFiles, facts: ModelFacts) -> dict[str, Any]:
    descriptor: dict[str, Any] = {}
    if files.created:
        descriptor["createdAt"] = files.created
    for key, label in (("authors", "gguf.model.authors"), ("licenses", "gguf.model.licenses")):
        if facts.label(label):
            descriptor[key] = [facts.label(label)]
    if facts.architecture:
        descriptor["family"] = facts.architecture
    for key, label in (
        ("name", "gguf.model.name"),
        ("title", "org.opencontainers.image.title"),
        ("description", "gguf.model.description"),
        ("sourceURL", "gguf.model.url"),
        ("vendor", "org.opencontainers.image.vendor"),
    ):
        if facts.label(label):
            descriptor[key] = facts.label(label)
    config: dict[str, Any] = {"architecture": "transformer", "format": "gguf"}
    if facts.parameters:
        config["paramSize"] = param_size(facts.parameters)
    if facts.filetype in _FLOATS:
        config["precision"] = _FLOATS[facts.filetype]
    elif facts.filetype:
        config["quantization"] = facts.filetype.lower()
    inputs, outputs = _CAPABILITIES.get(facts.usage, (["text"], ["text"]))
    config["capabilities"] = {"inputTypes": inputs, "outputTypes": outputs}
    modelfs = {"type": "layers", "diffIds": [f.digest for f in files.files]}
    return {"descriptor": descriptor, "config": config, "modelfs": modelfs}


def modelpack_artifact(
    files: ImageFiles, facts: ModelFacts, annotations: Mapping[str, str]
) -> Artifact:
    config = modelpack_config(files, facts)
    validate_modelpack_config(config)
    data = canonical_json(config)
    config_descriptor = Descriptor(MODELPACK_CONFIG, _digest(data), len(data))
    layers = [(_layer(f), f.host) for f in files.files]
    return Artifact.manifest(
        (config_descriptor, data),
        layers,
        annotations={**facts.annotations(), **annotations},
        artifact_type=MODELPACK_ARTIFACT_TYPE,
    )


def validate_modelpack_config(config: Mapping[str, Any]) -> None:
    """Raise PublishError listing every way ``config`` breaks the ModelPack config schema."""
    validator = jsonschema.Draft202012Validator(_schema())
    problems = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    if problems:
        lines = [
            f"{'.'.join(map(str, p.absolute_path)) or '(root)'}: {p.message}" for p in problems
        ]
        raise PublishError("ModelPack config does not match its schema: " + "; ".join(lines))


@cache
def _schema() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("modelpack-config.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _layer(file: ModelFile) -> Descriptor:
    media_type = _MEDIA.get(file.role, _WEIGHT)
    metadata = {
        "name": file.name,
        "mode": file.mode,
        "uid": 0,
        "gid": 0,
        "size": file.size,
        "mtime": datetime.fromtimestamp(0, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "typeflag": 48,  # '0': a regular file
    }
    annotations = {
        "org.cncf.model.file.metadata+json": canonical_json(metadata).decode(),
        "org.cncf.model.filepath": file.path,
        "org.opencontainers.image.title": file.name,
    }
    return Descriptor(media_type, file.digest, file.size, annotations)


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()
