"""Read GGUF headers fast and safely, and derive the figures llama.cpp reports for a model.

``read_header`` parses one file's header without touching tensor data (large arrays such as the
vocabulary are skipped, not decoded); ``read_facts`` reads a whole model, split or not.
gguf-py's constants (``Keys``, the type enums) come from here too, without importing numpy.
``file_type`` is the one rule for a model's file type (llama.cpp's), wherever it is shown.
"""

from __future__ import annotations

from ._constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, Keys
from ._facts import GGUFFacts, derive_facts
from ._file_type import FileType, file_type, file_type_name, model_file_type
from ._header import read_header
from ._records import ArraySummary, GGUFHeader, MetadataField, MetadataValue, TensorInfo
from ._shards import read_facts, shard_names, shard_paths

__all__ = [
    "GGML_QUANT_SIZES",
    "ArraySummary",
    "FileType",
    "GGMLQuantizationType",
    "GGUFFacts",
    "GGUFHeader",
    "GGUFValueType",
    "Keys",
    "MetadataField",
    "MetadataValue",
    "TensorInfo",
    "derive_facts",
    "file_type",
    "file_type_name",
    "model_file_type",
    "read_facts",
    "read_header",
    "shard_names",
    "shard_paths",
]
