"""The least disk a QUANTIZE or CONVERT output takes, known before the tool runs.

llama.cpp's tools find a full disk only when a write fails, minutes into a 40 GB model. These
floors let the build refuse at once (``harness._fs.ensure_room``, with the figures) when the
output cannot fit. A floor, never an estimate: a quant mix raises some tensors above its base
type (the output tensor to Q6_K, say) and a row that does not fit a block falls back to a larger
type, both only adding bytes; the 10 % margin covers the mixes that lower a few tensors (the
IQ ones, an ``--output-tensor-type`` below the base). An input this module cannot read gives 0
(no check): the tool then reports the fault itself, as before.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path

from harness.errors import HarnessError
from harness.gguf import (
    GGML_QUANT_SIZES,
    GGMLQuantizationType,
    GGUFHeader,
    read_header,
    shard_paths,
)

__all__ = ["convert_floor", "model_headers", "quantize_floor"]

_MARGIN = 0.9
# llama_tensor_get_type's base type for each mix (llama-quant.cpp at the pinned commit).
_MIX_BASE = {
    "Q2_K_S": "Q2_K",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "IQ2_M": "IQ2_S",
    "IQ3_XS": "IQ3_S",
    "IQ3_M": "IQ3_S",
}
# What llama-quantize leaves alone: only 2-D+ tensors named "*weight", never norms.
_KEPT = re.compile(r"(_norm|norm\.|pos_embd|token_types|ssm_conv1d|ssm_a|ssm_d)")
_SAFETENSORS_HEADER_MAX = 100 << 20  # the format's own cap
# Bytes per element of CONVERT's --outtype; "auto" writes F16 or BF16.
_CONVERT_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "auto": 2.0, "q8_0": 34 / 32}


def model_headers(source: str | os.PathLike[str]) -> list[GGUFHeader]:
    """The headers of every shard of the GGUF model ``source``; none when it cannot be read
    (the tool that reads it next says why)."""
    try:
        first = read_header(source)
        return [first] + [read_header(p) for p in shard_paths(os.fspath(source), first)[1:]]
    except (HarnessError, OSError):
        return []


def quantize_floor(headers: list[GGUFHeader], type_name: str) -> int:
    """The fewest bytes ``llama-quantize`` can write for the model of ``headers``."""
    name = type_name.upper()
    base = _MIX_BASE.get(name, name)
    if name == "COPY":
        return sum(h.file_size for h in headers)
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[base]]
    except KeyError:
        return 0  # a mix with no single base type (MXFP4_MOE): no floor
    total = 0.0
    for header in headers:
        total += header.data_offset
        for tensor in header.tensors:
            quantized = (
                len([d for d in tensor.shape if d > 1]) >= 2
                and tensor.name.endswith("weight")
                and not _KEPT.search(tensor.name)
            )
            if quantized:
                total += _MARGIN * tensor.n_elements / block * type_size
            else:
                total += tensor.n_bytes
    return int(total)


def convert_floor(model_dir: str | os.PathLike[str], outtype: str) -> int:
    """The fewest bytes the converter writes for the safetensors in ``model_dir`` (0 when they
    cannot be read or for ternary types, whose packing this does not model)."""
    per_element = _CONVERT_BYTES.get(outtype.lower())
    if per_element is None:
        return 0
    elements = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        counted = _safetensors_elements(path)
        if counted is None:
            return 0
        elements += counted
    return int(_MARGIN * elements * per_element)


def _safetensors_elements(path: Path) -> int | None:
    try:
        with open(path, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) != 8:
                return None
            (length,) = struct.unpack("<Q", prefix)
            if length > _SAFETENSORS_HEADER_MAX:
                return None
            header = json.loads(stream.read(length))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    total = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            return None
        total += math.prod(shape)
    return total
