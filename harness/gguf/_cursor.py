"""Bounds-checked reads from a GGUF buffer: every failure is a GGUFError carrying its byte offset.

Sizes are checked against the bytes that remain *before* anything is allocated or looped over, so
a count or length that lies costs one comparison, not memory or time proportional to the lie.
"""

from __future__ import annotations

import mmap
import struct
from typing import TypeAlias

from harness.errors import GGUFError, Location

from ._constants import GGUFValueType
from ._records import Scalar

Buffer: TypeAlias = bytes | mmap.mmap

# struct codes of the fixed-size value types; the ids and names come from gguf.GGUFValueType.
_CODES: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_VALUE_TYPES = {int(t): t for t in GGUFValueType}
STRING_PREFIX = 8  # a string is a u64 byte length followed by the bytes, no terminator


def min_size(vtype: GGUFValueType) -> int:
    """Fewest bytes one element of ``vtype`` can take (a string may be empty)."""
    return STRING_PREFIX if vtype is GGUFValueType.STRING else struct.calcsize(_CODES[vtype])


class Cursor:
    """A read position in ``buf`` with the file's byte order."""

    __slots__ = ("_scalar", "_u32", "_u64", "buf", "end", "order", "path", "pos")

    def __init__(self, buf: Buffer, path: str | None) -> None:
        self.buf = buf
        self.end = len(buf)
        self.path = path
        self.pos = 0
        self.set_order("<")

    def set_order(self, order: str) -> None:
        self.order = order
        self._u32 = struct.Struct(order + "I").unpack_from
        self._u64 = struct.Struct(order + "Q").unpack_from
        self._scalar = {t: struct.Struct(order + c) for t, c in _CODES.items()}

    @property
    def left(self) -> int:
        return self.end - self.pos

    def error(self, message: str, offset: int | None = None) -> GGUFError:
        where = self.pos if offset is None else offset
        return GGUFError(message, Location(path=self.path, offset=where))

    def need(self, n: int, what: str, at: int | None = None) -> None:
        if n > self.end - self.pos:
            raise self.error(
                f"{what} needs {n} bytes but only {self.left} remain (truncated or corrupt)", at
            )

    def u32(self, what: str) -> int:
        pos = self.pos
        self.need(4, what)
        self.pos = pos + 4
        value: int = self._u32(self.buf, pos)[0]
        return value

    def u64(self, what: str) -> int:
        pos = self.pos
        self.need(8, what)
        self.pos = pos + 8
        value: int = self._u64(self.buf, pos)[0]
        return value

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        raw = self.u32(what)
        vtype = _VALUE_TYPES.get(raw)
        if vtype is None:
            raise self.error(f"{what}: unknown value type {raw}", at)
        return vtype

    def text(self, what: str, *, strict: bool, limit: int | None = None) -> str:
        """A string. Names must be valid UTF-8; values are opaque bytes to llama.cpp, so not."""
        start = self.pos
        n = self.u64(what)
        if limit is not None and n > limit:
            raise self.error(f"{what}: length {n} exceeds the limit of {limit} bytes", start)
        self.need(n, what, start)
        raw = self.buf[self.pos : self.pos + n]
        try:
            result = raw.decode("utf-8", "strict" if strict else "replace")
        except UnicodeDecodeError as exc:
            raise self.error(f"{what} is not valid UTF-8", self.pos + exc.start) from None
        self.pos += n
        return result

    def scalar(self, vtype: GGUFValueType, what: str) -> Scalar:
        codec = self._scalar[vtype]
        self.need(codec.size, what)
        value: Scalar = codec.unpack_from(self.buf, self.pos)[0]
        self.pos += codec.size
        return value

    def check_array(self, vtype: GGUFValueType, count: int, what: str, at: int) -> None:
        """Fail unless ``count`` elements could fit in what is left of the buffer."""
        need = count * min_size(vtype)
        if need > self.left:
            raise self.error(
                f"{what} claims {count} {vtype.name} elements (at least {need} bytes) "
                f"but only {self.left} bytes remain",
                at,
            )

    def scalars(self, vtype: GGUFValueType, count: int) -> tuple[Scalar, ...]:
        codec = struct.Struct(f"{self.order}{count}{_CODES[vtype]}")
        values: tuple[Scalar, ...] = codec.unpack_from(self.buf, self.pos)
        self.pos += codec.size
        return values

    def skip_scalars(self, vtype: GGUFValueType, count: int) -> None:
        self.pos += count * min_size(vtype)

    def strings(self, count: int, what: str, limit: int) -> tuple[str, ...]:
        return tuple(self.text(f"{what}[{i}]", strict=False, limit=limit) for i in range(count))

    def skip_strings(self, count: int, what: str) -> None:
        """Walk ``count`` length prefixes without decoding: the hot path of a header read."""
        unpack, buf, pos = self._u64, self.buf, self.pos
        try:
            for _ in range(count):
                pos += STRING_PREFIX + unpack(buf, pos)[0]
        except (struct.error, OverflowError):
            pos = self.end + 1
        if pos > self.end:
            # Rare: walk again, checking every entry, so the error names the one that overruns.
            for i in range(count):
                start = self.pos
                n = self.u64(f"{what}[{i}] length")
                self.need(n, f"{what}[{i}]", start)
                self.pos += n
        self.pos = pos
