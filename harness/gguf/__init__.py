"""Read GGUF headers fast and safely, and derive the figures llama.cpp reports for a model.

``read_header`` parses one file's header without touching tensor data (large arrays such as the
vocabulary are skipped, not decoded); ``read_facts`` reads a whole model, split or not.
``file_type`` is the one rule for a model's file type (llama.cpp's), wherever it is shown.
"""

from __future__ import annotations

from ._facts import GGUFFacts, derive_facts
from ._file_type import FileType, file_type, file_type_name, model_file_type
from ._header import read_header
from ._records import ArraySummary, GGUFHeader, MetadataField, MetadataValue, TensorInfo
from ._shards import read_facts, shard_paths

__all__ = [
    "ArraySummary",
    "FileType",
    "GGUFFacts",
    "GGUFHeader",
    "MetadataField",
    "MetadataValue",
    "TensorInfo",
    "derive_facts",
    "file_type",
    "file_type_name",
    "model_file_type",
    "read_facts",
    "read_header",
    "shard_paths",
]
