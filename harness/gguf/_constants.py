"""gguf-py's constants (value types, quantization types, metadata keys) without the rest of gguf-py.

``import gguf`` runs its package ``__init__``, which loads the reader, the writer and numpy: 0.1 s
of a 0.15 s ``gguf-harness inspect``, for tables that are plain Python. So its ``constants.py`` is
loaded on its own, and registered as ``gguf.constants`` so that a later ``import gguf`` reuses it:
one ``GGUFValueType`` class in the process, and ``is`` comparisons hold whichever side made a value.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = [
    "GGML_QUANT_SIZES",
    "GGUF_DEFAULT_ALIGNMENT",
    "GGUF_MAGIC",
    "GGMLQuantizationType",
    "GGUFValueType",
    "Keys",
]


def _constants() -> ModuleType:
    loaded = sys.modules.get("gguf.constants")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("gguf")  # finds the package without running its __init__
    locations = package.submodule_search_locations if package is not None else None
    if not locations:
        import gguf.constants  # an unusual install: pay for the whole package

        return gguf.constants
    spec = importlib.util.spec_from_file_location(
        "gguf.constants", Path(locations[0]) / "constants.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gguf.constants"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["gguf.constants"]
        raise
    return module


if TYPE_CHECKING:  # the real types, for mypy
    from gguf.constants import (
        GGML_QUANT_SIZES,
        GGUF_DEFAULT_ALIGNMENT,
        GGUF_MAGIC,
        GGMLQuantizationType,
        GGUFValueType,
        Keys,
    )
else:
    _module = _constants()
    GGML_QUANT_SIZES = _module.GGML_QUANT_SIZES
    GGUF_DEFAULT_ALIGNMENT = _module.GGUF_DEFAULT_ALIGNMENT
    GGUF_MAGIC = _module.GGUF_MAGIC
    GGMLQuantizationType = _module.GGMLQuantizationType
    GGUFValueType = _module.GGUFValueType
    Keys = _module.Keys
