"""The type names CONVERT and QUANTIZE accept, as the seed documents them."""

from __future__ import annotations

from harness.toolchain._convert import CONVERT_TYPES as _CONVERT_TYPES
from harness.toolchain._qtypes import GGML_TYPES as _GGML_TYPES
from harness.toolchain._qtypes import QUANTIZE_TYPES as _QUANTIZE_TYPES

__all__ = [
    "CONVERT_CLASSES",
    "CONVERT_TYPES",
    "DEFAULT_CONVERT_TYPE",
    "DEFAULT_QUANTIZE_TYPE",
    "GGML_TYPES",
    "QUANTIZE_TYPES",
    "needs_imatrix",
]

# One source of truth: the toolchain's static tables of what the pinned llama.cpp accepts (the
# seed's own lists still named types llama.cpp has since removed, and lacked newer ones).
CONVERT_TYPES: tuple[str, ...] = tuple(_CONVERT_TYPES)

# The seed defaults to the invalid "FP16"; its README (and llama.cpp) mean F16.
DEFAULT_CONVERT_TYPE = "F16"

CONVERT_CLASSES: tuple[str, ...] = ("model", "lora")

QUANTIZE_TYPES: tuple[str, ...] = tuple(_QUANTIZE_TYPES)

DEFAULT_QUANTIZE_TYPE = "Q5_K_M"

# ggml tensor types, for --output-tensor-type and --token-embedding-type.
GGML_TYPES: tuple[str, ...] = tuple(_GGML_TYPES)


def needs_imatrix(quantize_type: str) -> bool:
    """Whether llama.cpp refuses this type without an importance matrix.

    The seed meant to check this but tested the imatrix path instead of the type, so the check
    never fired; llama-quantize then failed late, after the whole conversion.
    """
    return quantize_type.startswith(("IQ1_", "IQ2_")) or quantize_type == "Q2_K_S"
