"""Parse the header of a GGUF file: key/values and tensor infos, never the tensor data.

Checks follow llama.cpp's own loader (ggml/src/gguf.cpp) so that a file this accepts is one
llama.cpp can at least open; a file it rejects fails with the offending byte offset.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Callable, Collection

from harness.errors import GGUFError, Location

from ._constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
)
from ._cursor import STRING_PREFIX, Buffer, Cursor
from ._records import ArraySummary, GGUFHeader, MetadataField, MetadataValue, TensorInfo

__all__ = [
    "MAX_ARRAY",
    "MAX_KEY",
    "MAX_KVS",
    "MAX_TENSORS",
    "MAX_VALUE",
    "KeepArray",
    "parse_header",
    "read_header",
]

KeepArray = Callable[[str], bool]

_MAGIC = struct.pack("<I", GGUF_MAGIC)
_VERSIONS = (2, 3)  # v1 used 32-bit counts; llama.cpp dropped it long ago
_SMALL_ARRAY = 64  # arrays this short are always kept: per-layer figures, not vocabularies
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_TENSOR_NAME = 63  # GGML_MAX_NAME - 1 (room for the terminator)
# Bounds no legitimate file reaches (docs/limits.md). "Fits in what is left of the file" alone
# would let a multi-GiB file make us loop, or hold, in proportion to a lie about a count.
MAX_KVS = 1 << 16  # real models carry tens to hundreds of keys
MAX_TENSORS = 1 << 20  # the largest unfused MoE checkpoints have tens of thousands
MAX_ARRAY = 1 << 24  # the longest real arrays are vocabularies and merges: a few 100k entries
MAX_KEY = 65535  # no real key comes near this; a longer one is a corrupt length
# The longest real string values (a whole tokenizer.json) are tens of MiB; a length beyond this
# in a multi-GiB file is a lie that would otherwise be copied into memory.
MAX_VALUE = 1 << 28
_MAX_INT64 = 2**63 - 1  # ggml keeps dimensions and element counts in int64_t
# Fewest bytes an entry can take: key length + type + 1-byte value; name length + n_dims + type
# + offset. They bound how many entries the rest of the file could possibly hold.
_MIN_KV = STRING_PREFIX + 4 + 1
_MIN_TENSOR = STRING_PREFIX + 4 + 4 + 8
# ggml type id -> (name, elements per block, bytes per block), from gguf's tables.
_GGML: dict[int, tuple[str, int, int]] = {
    int(t): (t.name, *GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType if t in GGML_QUANT_SIZES
}


def read_header(
    source: str | os.PathLike[str] | bytes, *, arrays: bool | Collection[str] = False
) -> GGUFHeader:
    """Parse the header of a GGUF file (memory-mapped) or of bytes already in memory.

    Array bodies are skipped unless short or named in ``arrays`` (``True``: keep all of them);
    a skipped array is an ArraySummary. Any malformed input raises GGUFError.
    """
    return parse_header(source, _keeper(arrays))


def parse_header(source: str | os.PathLike[str] | bytes, keep: KeepArray) -> GGUFHeader:
    """read_header with a predicate choosing which arrays keep their bodies."""
    if isinstance(source, bytes | bytearray | memoryview):
        return _parse(bytes(source), None, keep)
    path = os.fspath(source)
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                raise GGUFError("empty file, not a GGUF", Location(path=path, offset=0))
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return _parse(view, path, keep)
    except OSError as exc:
        raise GGUFError(f"cannot read: {exc.strerror or exc}", Location(path=path)) from None


def _keeper(arrays: bool | Collection[str]) -> KeepArray:
    if isinstance(arrays, bool):
        return lambda _key: arrays
    wanted = frozenset([arrays] if isinstance(arrays, str) else arrays)
    return wanted.__contains__


def _parse(buf: Buffer, path: str | None, keep: KeepArray) -> GGUFHeader:
    cur = Cursor(buf, path)
    if cur.end == 0:
        raise cur.error("empty file, not a GGUF")
    if buf[:4] != _MAGIC:
        raise cur.error(f"not a GGUF file: starts with {buf[:4]!r}, expected {_MAGIC!r}")
    cur.pos = 4
    version, byte_order = _version(cur)
    tensor_count = cur.u64("tensor count")
    kv_count = cur.u64("metadata key/value count")
    # Bound the counts by what the rest of the file could hold before looping over them.
    kv_least = kv_count * _MIN_KV
    if kv_least > cur.left:
        raise cur.error(
            f"{kv_count} key/values need at least {kv_least} bytes, only {cur.left} remain", 16
        )
    if tensor_count * _MIN_TENSOR > cur.left - kv_least:
        raise cur.error(
            f"{tensor_count} tensor infos (after {kv_count} key/values) cannot fit in the "
            f"{cur.left} bytes that remain",
            8,
        )
    if kv_count > MAX_KVS:
        raise cur.error(f"{kv_count} key/values exceed the limit of {MAX_KVS}", 16)
    if tensor_count > MAX_TENSORS:
        raise cur.error(f"{tensor_count} tensors exceed the limit of {MAX_TENSORS}", 8)

    metadata: dict[str, MetadataField] = {}
    for _ in range(kv_count):
        start = cur.pos
        key = cur.text("metadata key", strict=True, limit=MAX_KEY)
        if not key:
            raise cur.error("empty metadata key", start)
        if key in metadata:
            first = metadata[key].offset
            raise cur.error(f"duplicate metadata key {key!r} (first at byte {first})", start)
        metadata[key] = _field(cur, key, start, keep(key))

    infos = [_tensor_info(cur) for _ in range(tensor_count)]
    alignment = _alignment(cur, metadata)
    data_offset = -(-cur.pos // alignment) * alignment
    seen: dict[str, int] = {}
    packed = 0  # where the next tensor's data must start: llama.cpp wants them back to back
    for info, start, offset_at in infos:
        if info.name in seen:
            first = seen[info.name]
            raise cur.error(f"duplicate tensor name {info.name!r} (first at byte {first})", start)
        seen[info.name] = start
        _check_placement(cur, info, offset_at, alignment, data_offset)
        if info.offset != packed:
            raise cur.error(
                f"tensor {info.name!r}: data offset {info.offset}, expected {packed} "
                "(tensor data must be packed in order)",
                offset_at,
            )
        packed += -(-info.n_bytes // alignment) * alignment
    return GGUFHeader(
        path=path,
        version=version,
        byte_order=byte_order,
        tensor_count=tensor_count,
        metadata=metadata,
        tensors=tuple(entry[0] for entry in infos),
        alignment=alignment,
        data_offset=data_offset,
        file_size=cur.end,
    )


def _version(cur: Cursor) -> tuple[int, str]:
    raw = cur.u32("version")
    if raw in _VERSIONS:
        return raw, "little"
    # A big-endian file has the same magic bytes but its version reads byte-swapped.
    swapped = int.from_bytes(raw.to_bytes(4, "little"), "big")
    if swapped in _VERSIONS:
        cur.set_order(">")
        return swapped, "big"
    if 1 in (raw, swapped):
        raise cur.error("GGUF version 1 is not supported (llama.cpp reads 2 and 3): re-convert", 4)
    raise cur.error(f"unsupported GGUF version {raw} (supported: 2, 3)", 4)


def _field(cur: Cursor, key: str, start: int, keep: bool) -> MetadataField:
    vtype = cur.value_type(f"type of {key!r}")
    if vtype is not GGUFValueType.ARRAY:
        value: MetadataValue
        if vtype is GGUFValueType.STRING:
            value = cur.text(f"value of {key!r}", strict=False, limit=MAX_VALUE)
        else:
            value = cur.scalar(vtype, f"value of {key!r}")
        return MetadataField(key, vtype.name, value, start, cur.pos)

    itype = cur.value_type(f"element type of array {key!r}")
    if itype is GGUFValueType.ARRAY:
        raise cur.error(
            f"array {key!r} holds arrays, which llama.cpp does not support", cur.pos - 4
        )
    at = cur.pos
    count = cur.u64(f"length of array {key!r}")
    cur.check_array(itype, count, f"array {key!r}", at)
    if count > MAX_ARRAY:
        raise cur.error(f"array {key!r}: {count} elements exceed the limit of {MAX_ARRAY}", at)
    keep = keep or count <= _SMALL_ARRAY
    if itype is GGUFValueType.STRING:
        if keep:
            value = cur.strings(count, f"array {key!r}", MAX_VALUE)
        else:
            cur.skip_strings(count, f"array {key!r}")
    elif keep:
        value = cur.scalars(itype, count)
    else:
        cur.skip_scalars(itype, count)
    if not keep:
        value = ArraySummary(itype.name, count)
    return MetadataField(key, vtype.name, value, start, cur.pos, itype.name)


def _tensor_info(cur: Cursor) -> tuple[TensorInfo, int, int]:
    """One tensor info, where it starts, and where its data offset field is."""
    start = cur.pos
    name = cur.text("tensor name", strict=True, limit=_MAX_TENSOR_NAME)
    at = cur.pos
    n_dims = cur.u32(f"dimension count of tensor {name!r}")
    if n_dims > _MAX_DIMS:
        raise cur.error(f"tensor {name!r} has {n_dims} dimensions; ggml allows {_MAX_DIMS}", at)
    shape = tuple(cur.u64(f"dimension {i} of tensor {name!r}") for i in range(n_dims))
    n_elements = math.prod(shape)
    if max(shape, default=0) > _MAX_INT64 or n_elements > _MAX_INT64:
        raise cur.error(f"tensor {name!r}: shape {shape} overflows int64", at)
    at = cur.pos
    type_id = cur.u32(f"type of tensor {name!r}")
    if type_id not in _GGML:
        raise cur.error(f"tensor {name!r} has unknown ggml type {type_id}", at)
    type_name, block, type_size = _GGML[type_id]
    row = shape[0] if shape else 1
    if row % block:
        raise cur.error(
            f"tensor {name!r}: row of {row} elements is not a multiple of the {type_name} "
            f"block size {block}",
            at,
        )
    at = cur.pos
    offset = cur.u64(f"data offset of tensor {name!r}")
    n_bytes = n_elements // block * type_size
    info = TensorInfo(name, shape, type_name, type_id, offset, n_elements, n_bytes)
    return info, start, at


def _alignment(cur: Cursor, metadata: dict[str, MetadataField]) -> int:
    field = metadata.get(Keys.General.ALIGNMENT)
    if field is None:
        return GGUF_DEFAULT_ALIGNMENT
    value = field.value
    if field.type != GGUFValueType.UINT32.name or not isinstance(value, int):
        raise cur.error(f"{field.key} must be a UINT32, not {field.type}", field.offset)
    if value <= 0 or value & (value - 1):
        raise cur.error(f"{field.key} = {value} is not a power of two", field.offset)
    return value


def _check_placement(cur: Cursor, info: TensorInfo, at: int, alignment: int, base: int) -> None:
    if info.offset % alignment:
        raise cur.error(
            f"tensor {info.name!r}: data offset {info.offset} is not a multiple of the "
            f"alignment {alignment}",
            at,
        )
    end = base + info.offset + info.n_bytes
    if end > cur.end:
        raise cur.error(
            f"tensor {info.name!r}: data ends at byte {end}, past the end of the file "
            f"({cur.end} bytes)",
            at,
        )
