"""What QUANTIZE accepts at the pinned llama.cpp commit, and its flags checked and resolved.

Static tables rather than values read from the library at import time: the Packerfile checks use
them without loading llama.cpp, and the tests compare them with the loaded library.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ToolchainError

__all__ = [
    "GGML_TYPES",
    "GGML_TYPE_NAMES",
    "QUANTIZE_TYPES",
    "REMOVED_TYPES",
    "QuantizeOptions",
    "quantize_options",
]

#: Every ``QUANTIZE --type`` that llama-quantize accepts at the pinned commit, in its own order,
#: with its ``llama_ftype``. Q3_K / Q4_K / Q5_K are its aliases for the _M mixes; COPY copies
#: tensors unchanged.
QUANTIZE_TYPES: dict[str, int] = {
    "Q1_0": 40,
    "Q2_0": 41,
    "Q4_0": 2,
    "Q4_1": 3,
    "MXFP4_MOE": 38,
    "Q5_0": 8,
    "Q5_1": 9,
    "IQ2_XXS": 19,
    "IQ2_XS": 20,
    "IQ2_S": 28,
    "IQ2_M": 29,
    "IQ1_S": 24,
    "IQ1_M": 31,
    "TQ1_0": 36,
    "TQ2_0": 37,
    "Q2_K": 10,
    "Q2_K_S": 21,
    "IQ3_XXS": 23,
    "IQ3_S": 26,
    "IQ3_M": 27,
    "Q3_K": 12,
    "IQ3_XS": 22,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "IQ4_NL": 25,
    "IQ4_XS": 30,
    "Q4_K": 15,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K": 17,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "Q8_0": 7,
    "F16": 1,
    "BF16": 32,
    "F32": 0,
    "COPY": 0,
}

#: Types the seed's Packerfiles may name that llama.cpp has since removed, and what to use.
REMOVED_TYPES: dict[str, str] = {
    "Q4_0_4_4": "Q4_0",
    "Q4_0_4_8": "Q4_0",
    "Q4_0_8_8": "Q4_0",
    "IQ4_NL_4_4": "IQ4_NL",
    "IQ4_NL_4_8": "IQ4_NL",
    "IQ4_NL_8_8": "IQ4_NL",
}

# ggml_type ids by name at the pinned commit, as ggml_type_name() spells them; the ids that the
# table leaves out are deprecated or removed types. Tests check it against the loaded library.
GGML_TYPE_NAMES: dict[int, str] = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    6: "q5_0",
    7: "q5_1",
    8: "q8_0",
    9: "q8_1",
    10: "q2_K",
    11: "q3_K",
    12: "q4_K",
    13: "q5_K",
    14: "q6_K",
    15: "q8_K",
    16: "iq2_xxs",
    17: "iq2_xs",
    18: "iq3_xxs",
    19: "iq1_s",
    20: "iq4_nl",
    21: "iq3_s",
    22: "iq2_s",
    23: "iq4_xs",
    24: "i8",
    25: "i16",
    26: "i32",
    27: "i64",
    28: "f64",
    29: "iq1_m",
    30: "bf16",
    34: "tq1_0",
    35: "tq2_0",
    39: "mxfp4",
    40: "nvfp4",
    41: "q1_0",
    42: "q2_0",
}
#: ``--output-tensor-type`` / ``--token-embedding-type`` values (upper case) and their ggml ids.
GGML_TYPES: dict[str, int] = {name.upper(): gid for gid, name in GGML_TYPE_NAMES.items()}
_REMOVED_GGML = {"Q4_0_4_4": "Q4_0", "Q4_0_4_8": "Q4_0", "Q4_0_8_8": "Q4_0"}


@dataclass(frozen=True)
class QuantizeOptions:
    """One QUANTIZE instruction's flags, validated and resolved to llama.cpp's numbers."""

    type: str  # canonical upper-case name, a key of QUANTIZE_TYPES
    ftype: int
    imatrix: Path | None = None
    # recorded as quantize.imatrix.file; None records the path as given, as llama-quantize does
    imatrix_label: str | None = None
    include_weights: tuple[str, ...] = ()
    exclude_weights: tuple[str, ...] = ()
    pure: bool = False
    leave_output_tensor: bool = False
    output_tensor_type: int | None = None
    token_embedding_type: int | None = None
    allow_requantize: bool = False
    nthread: int | None = None


def quantize_options(
    type_name: str,
    *,
    imatrix: str | os.PathLike[str] | None = None,
    imatrix_label: str | None = None,
    include_weights: Sequence[str] = (),
    exclude_weights: Sequence[str] = (),
    pure: bool = False,
    leave_output_tensor: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    allow_requantize: bool = False,
    nthread: int | None = None,
) -> QuantizeOptions:
    """Validate one QUANTIZE's flags without running anything (what ``quantize`` checks first)."""
    name = type_name.upper()
    if name in REMOVED_TYPES:
        raise ToolchainError(
            f"quantization type {type_name} was removed from llama.cpp: use "
            f"{REMOVED_TYPES[name]}, which the CPU backend repacks at load time"
        )
    if name not in QUANTIZE_TYPES:
        raise ToolchainError(
            f"unknown quantization type {type_name!r}: expected one of {', '.join(QUANTIZE_TYPES)}"
        )
    if isinstance(include_weights, str) or isinstance(exclude_weights, str):
        raise ToolchainError("include_weights/exclude_weights take a list of tensor names")
    if include_weights and exclude_weights:
        raise ToolchainError("include_weights and exclude_weights cannot be used together")
    if (include_weights or exclude_weights) and imatrix is None:
        raise ToolchainError("include_weights/exclude_weights select imatrix entries: need imatrix")
    if imatrix_label is not None and imatrix is None:
        raise ToolchainError("imatrix_label names an imatrix: need imatrix")
    if nthread is not None and nthread < 0:
        raise ToolchainError(f"nthread must be positive, not {nthread}")
    return QuantizeOptions(
        type=name,
        ftype=QUANTIZE_TYPES[name],
        imatrix=Path(imatrix) if imatrix is not None else None,
        imatrix_label=imatrix_label,
        include_weights=tuple(include_weights),
        exclude_weights=tuple(exclude_weights),
        pure=pure,
        leave_output_tensor=leave_output_tensor,
        output_tensor_type=_ggml_type(output_tensor_type, "output-tensor-type"),
        token_embedding_type=_ggml_type(token_embedding_type, "token-embedding-type"),
        allow_requantize=allow_requantize,
        nthread=nthread,
    )


def _ggml_type(name: str | None, flag: str) -> int | None:
    if name is None:
        return None
    key = name.upper()
    if key in _REMOVED_GGML:
        raise ToolchainError(
            f"--{flag}={name}: removed from llama.cpp, use {_REMOVED_GGML[key]} (repacked at load)"
        )
    if key not in GGML_TYPES:
        raise ToolchainError(f"--{flag}: unknown ggml type {name!r}")
    return GGML_TYPES[key]
