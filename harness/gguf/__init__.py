"""Read GGUF headers fast and safely, and derive the figures llama.cpp reports for a model.

``read_header`` parses one file's header without touching tensor data (large arrays such as the
vocabulary are skipped, not decoded); ``read_facts`` reads a whole model, split or not.
"""

from __future__ import annotations

from ._facts import GGUFFacts, derive_facts
from ._header import read_header
from ._records import ArraySummary, GGUFHeader, MetadataField, MetadataValue, TensorInfo
from ._shards import read_facts, shard_paths

__all__ = [
    "ArraySummary",
    "GGUFFacts",
    "GGUFHeader",
    "MetadataField",
    "MetadataValue",
    "TensorInfo",
    "derive_facts",
    "read_facts",
    "read_header",
    "shard_paths",
]
