"""A model's file type as llama.cpp tells it: the one rule every report, label and check uses.

llama.cpp's loader (src/llama-model-loader.cpp) takes ``general.file_type`` when the file states
it; only when it does not does it guess from the tensor types: the type the most tensors have,
counted in the loader's tensor order, mapped to a file type (a K-quant to its medium mix).
``llama_ftype_name`` names the number ("Q4_K - Medium"); we show the short name llama-quantize
and gguf-py give the same number ("Q4_K_M").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._constants import GGMLQuantizationType as T
from ._constants import Keys
from ._records import GGUFHeader

__all__ = [
    "GUESSED",
    "FileType",
    "file_type",
    "file_type_name",
    "guess_file_type",
    "model_file_type",
]

GUESSED = 1024  # LLAMA_FTYPE_GUESSED: the loader's mark on a number it guessed
_UINT32 = 2**32  # the loader reads general.file_type into a uint32_t

# llama_ftype number (include/llama.h) -> (short name, llama_ftype_name's text). Numbers that
# llama.cpp retired (4-6, 33-35) or never had are absent: it prints them "unknown, may not work".
_NAMES: dict[int, tuple[str, str]] = {
    0: ("F32", "all F32"),
    1: ("F16", "F16"),
    2: ("Q4_0", "Q4_0"),
    3: ("Q4_1", "Q4_1"),
    7: ("Q8_0", "Q8_0"),
    8: ("Q5_0", "Q5_0"),
    9: ("Q5_1", "Q5_1"),
    10: ("Q2_K", "Q2_K - Medium"),
    11: ("Q3_K_S", "Q3_K - Small"),
    12: ("Q3_K_M", "Q3_K - Medium"),
    13: ("Q3_K_L", "Q3_K - Large"),
    14: ("Q4_K_S", "Q4_K - Small"),
    15: ("Q4_K_M", "Q4_K - Medium"),
    16: ("Q5_K_S", "Q5_K - Small"),
    17: ("Q5_K_M", "Q5_K - Medium"),
    18: ("Q6_K", "Q6_K"),
    19: ("IQ2_XXS", "IQ2_XXS - 2.0625 bpw"),
    20: ("IQ2_XS", "IQ2_XS - 2.3125 bpw"),
    21: ("Q2_K_S", "Q2_K - Small"),
    22: ("IQ3_XS", "IQ3_XS - 3.3 bpw"),
    23: ("IQ3_XXS", "IQ3_XXS - 3.0625 bpw"),
    24: ("IQ1_S", "IQ1_S - 1.5625 bpw"),
    25: ("IQ4_NL", "IQ4_NL - 4.5 bpw"),
    26: ("IQ3_S", "IQ3_S - 3.4375 bpw"),
    27: ("IQ3_M", "IQ3_S mix - 3.66 bpw"),
    28: ("IQ2_S", "IQ2_S - 2.5 bpw"),
    29: ("IQ2_M", "IQ2_M - 2.7 bpw"),
    30: ("IQ4_XS", "IQ4_XS - 4.25 bpw"),
    31: ("IQ1_M", "IQ1_M - 1.75 bpw"),
    32: ("BF16", "BF16"),
    36: ("TQ1_0", "TQ1_0 - 1.69 bpw ternary"),
    37: ("TQ2_0", "TQ2_0 - 2.06 bpw ternary"),
    38: ("MXFP4_MOE", "MXFP4 MoE"),
    39: ("NVFP4", "NVFP4"),
    40: ("Q1_0", "Q1_0"),
}
_UNKNOWN = ("Unknown", "unknown, may not work")

# The loader's guess: the most common ggml type -> llama_ftype number. Any other type (MXFP4,
# Q8_K, the integer types, ...) falls to its default case, all F32. Keyed by name so that an older
# gguf package, which lacks the newest types, simply has fewer of them.
_GUESS_BY_NAME = {
    "F32": 0, "F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7,
    "Q2_K": 10, "Q3_K": 12, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "TQ1_0": 36, "TQ2_0": 37,
    "IQ2_XXS": 19, "IQ2_XS": 20, "IQ2_S": 28, "IQ3_XXS": 23, "IQ1_S": 24, "IQ1_M": 31,
    "IQ4_NL": 25, "IQ4_XS": 30, "IQ3_S": 26, "NVFP4": 39, "Q1_0": 40,
}  # fmt: skip
_GUESS = {int(t): _GUESS_BY_NAME[t.name] for t in T if t.name in _GUESS_BY_NAME}
# weight_name_comparer's sscanf(name, "blk.%d."): %d skips C whitespace and takes a sign. Digits
# are capped so a hostile name cannot make int() refuse it; no real layer number comes close.
_LAYER = re.compile(r"blk\.[ \t\n\v\f\r]*([+-]?\d{1,18})")


@dataclass(frozen=True)
class FileType:
    """llama.cpp's file type of a model, and whether it was guessed from the tensor types."""

    code: int  # llama_ftype number, without the GUESSED mark
    inferred: bool

    @property
    def name(self) -> str:
        """The short name we show: ``Q4_K_M``."""
        return file_type_name(self.code)

    @property
    def llama_name(self) -> str:
        """Exactly what llama.cpp prints as ``file type``: ``(guessed) Q4_K - Medium``."""
        text = _NAMES.get(self.code, _UNKNOWN)[1]
        return f"(guessed) {text}" if self.inferred else text


def file_type(declared: object, tensors: Iterable[tuple[str, int]]) -> FileType:
    """The file type of a model whose ``general.file_type`` value is ``declared`` (None when
    absent) and whose tensors, over all shards, are ``(name, ggml type id)`` pairs.

    Any integer that fits a uint32 counts as stated (llama.cpp itself only loads a UINT32 one);
    the tensors are consulted only when nothing is stated.
    """
    if isinstance(declared, int) and not isinstance(declared, bool) and 0 <= declared < _UINT32:
        return FileType(declared & ~GUESSED, bool(declared & GUESSED))
    return FileType(guess_file_type(tensors), True)


def model_file_type(headers: Sequence[GGUFHeader]) -> FileType:
    """file_type of a model read as its shards' headers, in order: the loader takes metadata
    from the first shard and counts every shard's tensors."""
    tensors = ((t.name, t.type_id) for h in headers for t in h.tensors)
    return file_type(headers[0].get(Keys.General.FILE_TYPE) if headers else None, tensors)


def file_type_name(code: int) -> str:
    """The short name of llama_ftype ``code`` (``Unknown`` for a number llama.cpp lacks)."""
    return _NAMES.get(code & ~GUESSED, _UNKNOWN)[0]


def guess_file_type(tensors: Iterable[tuple[str, int]]) -> int:
    """llama.cpp's guess: walk the tensors in the loader's order, and the first type to reach
    the highest count wins (so ties go to the type met first), as in its loop."""
    counts: Counter[int] = Counter()
    best, most = int(T.F32), 0
    for _name, kind in sorted(tensors, key=_load_order):
        counts[kind] += 1
        if counts[kind] > most:
            best, most = kind, counts[kind]
    return _GUESS.get(best, 0)


def _load_order(tensor: tuple[str, int]) -> tuple[int, str]:
    """The loader's weights_map order: layer number (-1 outside ``blk.N.``), then the name."""
    match = _LAYER.match(tensor[0])
    return (int(match[1]) if match else -1, tensor[0])
