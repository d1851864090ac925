"""The type names CONVERT and QUANTIZE accept, as the seed documents them."""

from __future__ import annotations

__all__ = [
    "CONVERT_CLASSES",
    "CONVERT_TYPES",
    "DEFAULT_CONVERT_TYPE",
    "DEFAULT_QUANTIZE_TYPE",
    "GGML_TYPES",
    "QUANTIZE_TYPES",
    "needs_imatrix",
]

# convert_hf_to_gguf.py --outtype choices, upper-cased as the Packerfile spells them.
CONVERT_TYPES: tuple[str, ...] = ("F32", "F16", "BF16", "Q8_0", "TQ1_0", "TQ2_0")

# The seed defaults to the invalid "FP16"; its README (and llama.cpp) mean F16.
DEFAULT_CONVERT_TYPE = "F16"

CONVERT_CLASSES: tuple[str, ...] = ("model", "lora")

# llama-quantize's file types (the seed's list of 35, from quantize.cpp).
QUANTIZE_TYPES: tuple[str, ...] = (
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ2_M",
    "IQ1_S",
    "IQ1_M",
    "TQ1_0",
    "TQ2_0",
    "Q2_K",
    "Q2_K_S",
    "IQ3_XXS",
    "IQ3_S",
    "IQ3_M",
    "Q3_K",
    "IQ3_XS",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "IQ4_NL",
    "IQ4_XS",
    "Q4_K",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
    "Q4_0_4_4",
    "Q4_0_4_8",
    "Q4_0_8_8",
)

DEFAULT_QUANTIZE_TYPE = "Q5_K_M"

# ggml tensor types, for --output-tensor-type and --token-embedding-type.
GGML_TYPES: tuple[str, ...] = (
    "I8",
    "I16",
    "I32",
    "I64",
    "F64",
    "F32",
    "F16",
    "BF16",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q8_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "Q8_K",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ3_XXS",
    "IQ3_S",
    "IQ2_S",
    "IQ1_S",
    "IQ1_M",
    "IQ4_NL",
    "IQ4_XS",
    "Q4_0_4_4",
    "Q4_0_4_8",
    "Q4_0_8_8",
    "TQ1_0",
    "TQ2_0",
)


def needs_imatrix(quantize_type: str) -> bool:
    """Whether llama.cpp refuses this type without an importance matrix.

    The seed meant to check this but tested the imatrix path instead of the type, so the check
    never fired; llama-quantize then failed late, after the whole conversion.
    """
    return quantize_type.startswith(("IQ1_", "IQ2_")) or quantize_type == "Q2_K_S"
