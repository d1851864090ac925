"""GGUF facts of a seed image, read once, for every format that needs to restate them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError
from harness.oci import Image, format_bpw, format_parameters, parse_seed_config
from harness.toolchain import parse_server_args

from ._evidence import PREFIX

__all__ = ["ModelFacts", "model_facts", "param_size"]

_SCALES = ((1e15, "Q"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


@dataclass(frozen=True)
class ModelFacts:
    architecture: str
    parameters: int
    parameters_label: str  # "134.52 M"
    bpw_label: str  # "5.75 bpw"
    filetype: str  # "Q4_1"
    usage: str  # "text-to-text"
    labels: Mapping[str, str]
    metadata: Mapping[str, Any]  # the main GGUF's key/values (arrays reduced)
    cmd: tuple[str, ...]
    size: int  # bytes of the GGUF files

    def annotations(self) -> dict[str, str]:
        """GGUF facts that neither ModelPack nor Docker's config can hold, under our prefix."""
        found = {
            PREFIX + "gguf.architecture": self.architecture,
            PREFIX + "gguf.parameters": self.parameters_label,
            PREFIX + "gguf.bpw": self.bpw_label,
            PREFIX + "gguf.filetype": self.filetype,
            PREFIX + "gguf.usage": self.usage,
        }
        if self.cmd:
            found[PREFIX + "cmd"] = json.dumps(list(self.cmd), separators=(",", ":"))
        return {k: v for k, v in sorted(found.items()) if v}

    def label(self, key: str) -> str:
        return self.labels.get(key, "")

    @property
    def context_size(self) -> int | None:
        """The ``-c``/``--ctx-size`` the image's Cmd sets, if any, as llama-server reads it."""
        try:
            arg = parse_server_args(self.cmd).last("--ctx-size")
        except UsageError:
            return None  # a Cmd llama-server would refuse says nothing reliable
        return int(arg.value) if arg is not None and arg.value.isdigit() else None


def model_facts(image: Image) -> ModelFacts:
    seed = parse_seed_config(image.config)
    labels = dict(seed.labels)
    model = seed.model
    return ModelFacts(
        architecture=labels.get("gguf.model.architecture") or model.architecture,
        parameters=model.parameters,
        parameters_label=labels.get("gguf.model.parameters") or format_parameters(model.parameters),
        bpw_label=labels.get("gguf.model.bpw") or format_bpw(model.bits_per_weight),
        filetype=model.derived_file_type.name,  # the GGUF's, not a label another tool wrote
        usage=labels.get("gguf.model.usage", "text-to-text"),
        labels=labels,
        metadata=dict(model.metadata),
        cmd=seed.cmd,
        size=seed.size,
    )


def param_size(count: int) -> str:
    """ModelPack's ``paramSize``: a count with at most one decimal and a scale, ``134.5M``."""
    for scale, letter in _SCALES:
        if count >= scale:
            value = f"{count / scale:.1f}".removesuffix(".0")
            return f"{value}{letter}"
    return f"{count / 1e3:.1f}K" if count else "0K"
