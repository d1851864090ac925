"""Records for what a GGUF header holds, as read (nothing derived beyond byte counts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array reduced to its element type and length (bodies are not read)."""

    type: str  # gguf.GGUFValueType name, e.g. "STRING"
    length: int


Scalar: TypeAlias = int | float | bool | str
# A kept array is a tuple of scalars; a skipped one is only its summary.
MetadataValue: TypeAlias = Scalar | tuple[Scalar, ...] | ArraySummary


@dataclass(frozen=True)
class MetadataField:
    """One key/value pair of the header."""

    key: str
    type: str  # gguf.GGUFValueType name of the value: "UINT32", "STRING", "ARRAY", ...
    value: MetadataValue  # scalar; tuple when an array's body was kept; else ArraySummary
    offset: int  # byte offset of the key's length prefix, for error messages
    end: int  # byte offset just past the value: where the next key/value (or tensor info) starts
    item_type: str | None = None  # element type name, arrays only

    @property
    def summary(self) -> ArraySummary | None:
        """The array's element type and length whether or not its body was kept."""
        if self.item_type is None:
            return None
        if isinstance(self.value, ArraySummary):
            return self.value
        assert isinstance(self.value, tuple)
        return ArraySummary(self.item_type, len(self.value))


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's description from the header; the data itself is never read."""

    name: str
    shape: tuple[int, ...]  # ggml order, as stored: ne[0] (the row length) first
    ggml_type: str  # gguf.GGMLQuantizationType name, e.g. "Q4_K"
    type_id: int
    offset: int  # relative to the data section, as stored
    n_elements: int
    n_bytes: int  # ggml_nbytes: n_elements / block size * type size


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data of one GGUF file."""

    path: str | None  # None when parsed from bytes
    version: int
    byte_order: str  # "little" or "big"
    tensor_count: int
    metadata: Mapping[str, MetadataField]  # in file order
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int  # absolute offset of the data section
    file_size: int

    def get(self, key: str, default: MetadataValue | None = None) -> MetadataValue | None:
        """The value stored under ``key``, or ``default``."""
        field = self.metadata.get(key)
        return default if field is None else field.value
