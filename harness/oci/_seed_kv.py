"""A GGUF key/value as gguf-parser v0.12.0 writes it into the seed's image config (metadataKV).

docs/image-format.md §5.1: strings trimmed as Go's bytes.TrimSpace trims them, float32 as the
shortest decimal that reads back, every array reduced to its extent, enumerations as numbers.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from harness.gguf import GGUFValueType, MetadataField

__all__ = ["go_trim", "kv_json"]

# Go's unicode.IsSpace, which bytes.TrimSpace uses on every string gguf-parser reads. Python's
# str.strip() also strips U+001C..U+001F, which Go keeps, so the set is spelled out.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501


def go_trim(text: str) -> str:
    return text.strip(_GO_SPACE)


def kv_json(field: MetadataField) -> dict[str, Any]:
    """``{"key", "valueType", "value"}`` for one key/value, placed by the offsets the header
    parser recorded (no second walk over the file)."""
    vtype = GGUFValueType[field.type]
    value: Any
    if vtype is GGUFValueType.ARRAY:
        assert field.item_type is not None and field.summary is not None
        # gguf-parser's JSON went through a Go map in the seed's builder: keys sorted.
        start = field.offset + 8 + len(field.key.encode("utf-8")) + 4
        value = {
            "len": field.summary.length,
            "size": field.end - (start + 4 + 8),
            "startOffset": start,
            "type": int(GGUFValueType[field.item_type]),
        }
    elif vtype is GGUFValueType.STRING:
        value = go_trim(str(field.value))
    elif vtype is GGUFValueType.FLOAT32:
        value = _float32(float(field.value))  # type: ignore[arg-type]
    elif vtype is GGUFValueType.FLOAT64:
        number = float(field.value)  # type: ignore[arg-type]
        value = number if math.isfinite(number) else None
    else:
        value = field.value
    return {"key": go_trim(field.key), "valueType": int(vtype), "value": value}


def _float32(value: float) -> float | None:
    """The shortest decimal that reads back as the same float32, as Go encodes a float32.

    Without this, 1e-5 stored as float32 would be written as 9.999999747378752e-06.
    """
    if not math.isfinite(value):
        return None  # Go's encoder fails on NaN/Inf; null keeps the config readable
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        try:
            if struct.pack("<f", float(text)) == packed:
                return float(text)
        except OverflowError:
            continue  # near FLT_MAX a short decimal (3.403e+38) lies past every float32
    return value
