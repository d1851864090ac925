"""Reading the three model formats the store holds: the seed's image (an image config whose
``config`` holds Model, Cmd and Labels), a CNCF ModelPack artifact, a Docker Model Runner model.

``facts`` gives the seed's ``list`` columns for any of them; ``raw_file_path`` names where a raw
layer's file goes in the model directory; ``main_model`` finds the GGUF to load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.oci import (
    LABEL_PREFIX,
    Descriptor,
    OCIError,
    format_bpw,
    format_parameters,
    parse_seed_config,
)

__all__ = [
    "DMR_CONFIG_TYPES",
    "MODELPACK_CONFIG_TYPES",
    "Facts",
    "facts",
    "main_model",
    "raw_file_path",
]

MODELPACK_CONFIG_TYPES = frozenset(
    {"application/vnd.cncf.model.config.v1+json", "application/vnd.cnai.model.config.v1+json"}
)
DMR_CONFIG_TYPES = frozenset(
    {
        "application/vnd.docker.ai.model.config.v0.1+json",
        "application/vnd.docker.ai.model.config.v0.2+json",
    }
)
_PREFIX = LABEL_PREFIX
_FILEPATH = "org.cncf.model.filepath"
_TITLE = "org.opencontainers.image.title"
# Docker Model Runner v0.1 layers carry no file name; these are the names its own store uses.
_DMR_NAMES = {
    "application/vnd.docker.ai.gguf.v3": "model.gguf",
    "application/vnd.docker.ai.mmproj": "model.mmproj",
    "application/vnd.docker.ai.chat.template.jinja": "template.jinja",
    "application/vnd.docker.ai.license": "LICENSE",
}
_GGUF_TYPES = frozenset(
    {"application/vnd.docker.ai.gguf.v3", "application/vnd.cncf.model.weight.v1.raw"}
)


@dataclass(frozen=True)
class Facts:
    """The seed's ``list`` columns other than NAME, TAG and ID."""

    format: str  # "gguf-packer", "modelpack", "docker-model-runner" or "image"
    arch: str
    params: str
    bpw: str
    type: str
    usage: str
    created: str
    size: int


def facts(
    config_media_type: str,
    config: Mapping[str, Any],
    annotations: Mapping[str, str],
    layers: Sequence[Descriptor],
) -> Facts:
    def ours(key: str) -> str:
        return annotations.get(_PREFIX + "gguf." + key, "")

    if config_media_type in MODELPACK_CONFIG_TYPES:
        descriptor, inner = _dict(config.get("descriptor")), _dict(config.get("config"))
        return Facts(
            "modelpack",
            ours("architecture") or _str(descriptor.get("family")),
            _str(inner.get("paramSize")) or ours("parameters"),
            ours("bpw"),
            _str(inner.get("quantization")) or ours("filetype"),
            ours("usage"),
            _str(descriptor.get("createdAt")),
            sum(d.size for d in layers if "weight" in d.media_type),
        )
    if config_media_type in DMR_CONFIG_TYPES:
        inner = _dict(config.get("config"))
        return Facts(
            "docker-model-runner",
            _str(inner.get("architecture")) or ours("architecture"),
            _str(inner.get("parameters")) or ours("parameters"),
            ours("bpw"),
            _str(inner.get("quantization")) or ours("filetype"),
            ours("usage"),
            _str(_dict(config.get("descriptor")).get("created")),
            sum(d.size for d in layers if d.media_type in _GGUF_TYPES),
        )
    inner = _dict(config.get("config"))
    labels = {str(k): str(v) for k, v in _dict(inner.get("Labels")).items()}
    model = _dict(inner.get("Model"))
    parameters = model.get("Parameters")
    bpw = model.get("BitsPerWeight")
    size = inner.get("Size")
    return Facts(
        "gguf-packer" if model else "image",
        labels.get("gguf.model.architecture") or _str(model.get("Architecture")),
        labels.get("gguf.model.parameters")
        or (format_parameters(parameters) if isinstance(parameters, int) else ""),
        labels.get("gguf.model.bpw") or (format_bpw(bpw) if isinstance(bpw, int | float) else ""),
        _file_type(config) or labels.get("gguf.model.filetype", ""),
        labels.get("gguf.model.usage", ""),
        _str(config.get("created")),
        size if isinstance(size, int) else 0,
    )


def _file_type(config: Mapping[str, Any]) -> str:
    """The main GGUF's file type by harness.gguf's rule: the seed's own label may carry its
    parser's guess or misnamed type (ftype 15 as ``IQ2_XXS/Q4_K_M``)."""
    try:
        return parse_seed_config(config).model.derived_file_type.name
    except OCIError:
        return ""  # not a seed image (or a broken one): the label, if any, is all there is


def raw_file_path(descriptor: Descriptor, taken: set[str]) -> str:
    """Where a raw layer's bytes go in the model directory: its ``org.cncf.model.filepath`` or
    title annotation, else a name from its media type; a repeated name gets a number."""
    annotations = descriptor.annotations or {}
    name = annotations.get(_FILEPATH) or annotations.get(_TITLE) or ""
    if not name:
        name = _DMR_NAMES.get(descriptor.media_type, "layer-" + descriptor.digest[7:19])
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        stem, dot, suffix = name.rpartition(".")
        candidate = f"{stem}-{number}.{suffix}" if dot and stem else f"{name}-{number}"
    taken.add(candidate)
    return candidate


def main_model(
    config_media_type: str,
    config: Mapping[str, Any],
    raw_paths: Mapping[str, str],
    layers: Sequence[Descriptor],
) -> str | None:
    """The main GGUF's path in the model directory (relative), if the format says."""
    if config_media_type in MODELPACK_CONFIG_TYPES or config_media_type in DMR_CONFIG_TYPES:
        for descriptor in layers:
            path = raw_paths.get(descriptor.digest)
            if path and descriptor.media_type in _GGUF_TYPES and path.endswith(".gguf"):
                return path
        for descriptor in layers:
            if descriptor.media_type in _GGUF_TYPES and descriptor.digest in raw_paths:
                return raw_paths[descriptor.digest]
        return None
    value = _dict(_dict(config.get("config")).get("Model")).get("CmdParameterValue")
    if not isinstance(value, str) or not value:
        return None
    return value.lstrip("/")


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
