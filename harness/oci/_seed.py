"""The image config GGUF Packer (gguf-packer-go v0.1.21, gguf-parser-go v0.12.0) writes.

docs/image-format.md gives every field with the line of Go it comes from. In short: the config's
``config`` object holds only Size, Model, Drafter, Projector, Adapters, Cmd and Labels (Go's
``omitempty`` drops the empty ones); each GGUF file is gguf-parser's ``GGUFFile`` JSON read with
SkipLargeMetadata (every array reduced to type/len/startOffset/size) plus the seed's summary
fields. Enumerations are JSON numbers, as Go's encoder writes them, so that the seed's own
consumer (which unmarshals into uint32 fields) can read what we write.
"""

from __future__ import annotations

import itertools
import json
import math
import mmap
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gguf import GGMLQuantizationType, GGUFValueType, LlamaFileType

from harness.errors import Location, OCIError
from harness.gguf import GGUFHeader, MetadataField

__all__ = [
    "HISTORY_COMMENT",
    "HistoryEntry",
    "SeedConfig",
    "SeedEntry",
    "derived_labels",
    "format_bpw",
    "format_parameters",
    "gguf_entry",
    "image_config",
    "parse_seed_config",
    "seed_config",
]

HISTORY_COMMENT = "buildkit.ggufpackerfile.v0"
# gguf-parser reads the magic as a little-endian uint32 whatever the file's byte order, so the
# seed only ever writes this value ("GGUF" = 0x46554747).
_MAGIC = 0x46554747
_HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor count, key/value count
# Go's unicode.IsSpace, which bytes.TrimSpace uses on every string gguf-parser reads. Python's
# str.strip() also strips U+001C..U+001F, which Go keeps, so the set is spelled out.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501
_FIXED_SIZE = {
    GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1,
    GGUFValueType.UINT16: 2, GGUFValueType.INT16: 2,
    GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4,
    GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8,
}  # fmt: skip
# The mixes llama.cpp names after the type most block weights have (gguf-parser's guess, with
# llama.cpp's ftype numbers); K-quants pick a mix by the runner-up types, below.
_SIMPLE_FTYPES = {
    "F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q4_0": "MOSTLY_Q4_0",
    "Q4_1": "MOSTLY_Q4_1", "Q5_0": "MOSTLY_Q5_0", "Q5_1": "MOSTLY_Q5_1", "Q8_0": "MOSTLY_Q8_0",
    "Q2_K": "MOSTLY_Q2_K", "Q6_K": "MOSTLY_Q6_K", "IQ2_XXS": "MOSTLY_IQ2_XXS",
    "IQ2_XS": "MOSTLY_IQ2_XS", "IQ3_XXS": "MOSTLY_IQ3_XXS", "IQ1_S": "MOSTLY_IQ1_S",
    "IQ4_NL": "MOSTLY_IQ4_NL", "IQ3_S": "MOSTLY_IQ3_S", "IQ2_S": "MOSTLY_IQ2_S",
    "IQ4_XS": "MOSTLY_IQ4_XS", "IQ1_M": "MOSTLY_IQ1_M", "TQ1_0": "MOSTLY_TQ1_0",
    "TQ2_0": "MOSTLY_TQ2_0", "MXFP4": "MOSTLY_MXFP4_MOE",
}  # fmt: skip
_GGML_NAMES = {int(t): t.name for t in GGMLQuantizationType}
_NUMBER_UNITS = ((1e15, "Q"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))
_LABEL_SOURCES = (
    ("general.name", "gguf.model.name", "org.opencontainers.image.title"),
    ("general.author", "gguf.model.authors", "org.opencontainers.image.authors"),
    ("general.url", "gguf.model.url", "org.opencontainers.image.url"),
    ("general.description", "gguf.model.description", "org.opencontainers.image.description"),
    ("general.license", "gguf.model.licenses", "org.opencontainers.image.licenses"),
)


# --- writing ------------------------------------------------------------------------------------


def gguf_entry(
    header: GGUFHeader | Sequence[GGUFHeader], cmd_value: str, cmd_index: int
) -> dict[str, Any]:
    """One GGUF file's entry (Model, Drafter, Projector or an adapter) as the seed writes it.

    A split model is given as all its shards' headers, in order. Headers read from bytes work
    unless a string array's body was skipped in the last key/value (its extent needs the file).
    """
    headers = [header] if isinstance(header, GGUFHeader) else list(header)
    if not headers:
        raise OCIError("gguf_entry needs at least one header")
    kvs: list[dict[str, Any]] = []
    tensors: list[dict[str, Any]] = []
    paddings: list[int] = []
    starts: list[int] = []
    sizes: list[int] = []
    model_sizes: list[int] = []
    kv_count = 0
    for one in headers:
        fields = [f for f in one.metadata.values() if f.key != "split.no"]
        kv_count += len(fields)
        ends = _field_ends(one)
        kvs.extend(_kv_json(f, ends[f.offset]) for f in fields)
        position = max(ends.values(), default=_HEADER_BYTES)
        for info in one.tensors:
            name_bytes = len(info.name.encode("utf-8"))
            tensors.append(
                {
                    "name": _go_trim(info.name),
                    "nDimensions": len(info.shape),
                    "dimensions": list(info.shape),
                    "type": info.type_id,
                    "offset": info.offset,
                    "startOffset": position,
                }
            )
            position += 8 + name_bytes + 4 + 8 * len(info.shape) + 4 + 8
        paddings.append(one.data_offset - position)
        starts.append(one.data_offset)
        sizes.append(one.file_size)
        model_sizes.append(one.file_size - one.data_offset)
    single = len(headers) == 1
    parameters = sum(math.prod(t["dimensions"]) for t in tensors if t["dimensions"])
    model_size = sum(model_sizes)
    bpw = model_size * 8 / parameters if parameters else 0
    gguf = {
        "header": {
            "magic": _MAGIC,
            "version": headers[-1].version,
            "tensorCount": sum(h.tensor_count for h in headers),
            "metadataKVCount": kv_count,
            "metadataKV": kvs,
        },
        "tensorInfos": tensors,
        "padding": paddings[0] if single else 0,
        "splitPaddings": paddings,
        "tensorDataStartOffset": starts[0] if single else 0,
        "splitTensorDataStartOffsets": starts,
        "size": sum(sizes),
        "splitSizes": sizes,
        "modelSize": model_size,
        "splitModelSizes": model_sizes,
        "modelParameters": parameters,
        "modelBitsPerWeight": bpw,
    }
    entry: dict[str, Any] = {
        "GGUF": gguf,
        "Architecture": _architecture(kvs),
        "Parameters": parameters,
        "BitsPerWeight": bpw,
    }
    file_type = _entry_file_type(gguf)
    if file_type:  # omitempty: F32 (0) is left out, as Go leaves it out
        entry["FileType"] = file_type
    if cmd_value:
        entry["CmdParameterValue"] = cmd_value
    if cmd_index:
        entry["CmdParameterIndex"] = cmd_index
    return entry


def seed_config(
    model: Mapping[str, Any] | None,
    drafter: Mapping[str, Any] | None = None,
    projector: Mapping[str, Any] | None = None,
    adapters: Sequence[Mapping[str, Any]] = (),
    cmd: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """The image config's ``config`` object: Size, Model, Drafter, Projector, Adapters, Cmd,
    Labels, each left out when empty (Go's omitempty). ``size`` defaults to the sum of the GGUF
    files' sizes; labels are written sorted by key, as Go writes a map."""
    roles = [e for e in (model, drafter, projector, *adapters) if e is not None]
    total = sum(int(e["GGUF"]["size"]) for e in roles) if size is None else size
    config: dict[str, Any] = {}
    if total:
        config["Size"] = total
    for key, value in (("Model", model), ("Drafter", drafter), ("Projector", projector)):
        if value is not None:
            config[key] = dict(value)
    if adapters:
        config["Adapters"] = [dict(a) for a in adapters]
    if cmd:
        config["Cmd"] = list(cmd)
    if labels:
        config["Labels"] = dict(sorted(labels.items()))
    return config


@dataclass(frozen=True)
class HistoryEntry:
    """One image history line; BuildKit writes one per instruction of the final stage."""

    created_by: str  # e.g. "COPY model.gguf /app/ # buildkit"
    comment: str = HISTORY_COMMENT
    empty_layer: bool = False  # ARG, LABEL, CMD: no layer
    created: str | datetime | None = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.created is not None:
            result["created"] = _rfc3339(self.created)
        result["created_by"] = self.created_by
        if self.comment:
            result["comment"] = self.comment
        if self.empty_layer:
            result["empty_layer"] = True
        return result


def image_config(
    seed_cfg: Mapping[str, Any],
    diff_ids: Sequence[str],
    history: Sequence[HistoryEntry | Mapping[str, Any]],
    created: str | datetime | None,
    architecture: str = "amd64",
    os: str = "linux",
) -> dict[str, Any]:
    """The full OCI image config: BuildKit re-encodes it through a Go map, so its top-level
    keys come sorted, and so they are here."""
    lines = [h.to_json() if isinstance(h, HistoryEntry) else dict(h) for h in history]
    with_layer = sum(1 for line in lines if not line.get("empty_layer"))
    if history and with_layer != len(diff_ids):
        # containerd and Docker reject an image whose history does not pair up with its layers.
        raise OCIError(
            f"history has {with_layer} entries with a layer but there are {len(diff_ids)} layers",
            key="history",
        )
    config: dict[str, Any] = {"architecture": architecture, "config": dict(seed_cfg)}
    if created is not None:
        config["created"] = _rfc3339(created)
    if lines:
        config["history"] = lines
    config["os"] = os
    config["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    return config


def derived_labels(
    model: Mapping[str, Any],
    existing_labels: Mapping[str, str] | None,
    created: str | datetime,
    base_name: str | None = None,
    base_digest: str | None = None,
    *,
    vendor: str = "gguf-packer",
    usage: str = "text-to-text",
) -> dict[str, str]:
    """The labels the seed adds for the main model (``model``: its gguf_entry), sorted.

    Each label is set only where ``existing_labels`` (the LABEL instructions) has none; a
    build-time ``--label`` is the caller's to apply on top, since it overrides everything.
    """
    labels = dict(existing_labels or {})

    def put(value: str, *keys: str) -> None:
        for key in keys:
            labels.setdefault(key, value)

    put(_rfc3339(created), "org.opencontainers.image.created")
    if base_name:
        put(base_name, "org.opencontainers.image.base.name")
        if base_digest:
            put(base_digest, "org.opencontainers.image.base.digest")
    gguf = model.get("GGUF") or {}
    put(vendor, "gguf.model.vendor", "org.opencontainers.image.vendor")
    put(usage, "gguf.model.usage")
    put(str(model.get("Architecture", "")), "gguf.model.architecture")
    put(format_parameters(int(model.get("Parameters", 0))), "gguf.model.parameters")
    put(format_bpw(float(model.get("BitsPerWeight", 0))), "gguf.model.bpw")
    put(_file_type_name(_entry_file_type(gguf)), "gguf.model.filetype")
    values = {kv.get("key"): kv.get("value") for kv in gguf.get("header", {}).get("metadataKV", [])}
    for key, label, oci_label in _LABEL_SOURCES:
        value = values.get(key)
        if isinstance(value, str) and value:
            put(value, label, oci_label)
    return dict(sorted(labels.items()))


def format_parameters(count: int) -> str:
    """gguf-parser's GGUFParametersScalar.String(): ``494.03 M``, ``1 B``, ``0``."""
    if count == 0:
        return "0"
    for base, unit in _NUMBER_UNITS:
        if count >= base:
            return f"{_trim_zeros(count / base)} {unit}"
    # The seed writes a trailing space here ("950 "); no real model is this small, and a label
    # with trailing blanks only trips up whoever compares it.
    return _trim_zeros(float(count))


def format_bpw(bpw: float) -> str:
    """gguf-parser's GGUFBitsPerWeightScalar.String(): ``6.71 bpw``."""
    return "0 bpw" if bpw <= 0 else f"{bpw:.2f} bpw"


def _trim_zeros(value: float) -> str:
    return f"{value:.2f}".removesuffix(".00")


def _rfc3339(when: str | datetime) -> str:
    if isinstance(when, str):
        return when
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_trim(text: str) -> str:
    return text.strip(_GO_SPACE)


def _kv_json(field: MetadataField, end: int) -> dict[str, Any]:
    vtype = GGUFValueType[field.type]
    value: Any
    if vtype is GGUFValueType.ARRAY:
        assert field.item_type is not None and field.summary is not None
        # gguf-parser's JSON went through a Go map in the seed's builder: keys sorted.
        start = field.offset + 8 + len(field.key.encode("utf-8")) + 4
        value = {
            "len": field.summary.length,
            "size": end - (start + 4 + 8),
            "startOffset": start,
            "type": int(GGUFValueType[field.item_type]),
        }
    elif vtype is GGUFValueType.STRING:
        value = _go_trim(str(field.value))
    elif vtype is GGUFValueType.FLOAT32:
        value = _float32(float(field.value))  # type: ignore[arg-type]
    elif vtype is GGUFValueType.FLOAT64:
        number = float(field.value)  # type: ignore[arg-type]
        value = number if math.isfinite(number) else None
    else:
        value = field.value
    return {"key": _go_trim(field.key), "valueType": int(vtype), "value": value}


def _float32(value: float) -> float | None:
    """The shortest decimal that reads back as the same float32, as Go encodes a float32.

    Without this, 1e-5 stored as float32 would be written as 9.999999747378752e-06.
    """
    if not math.isfinite(value):
        return None  # Go's encoder fails on NaN/Inf; null keeps the config readable
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack("<f", float(text)) == packed:
            return float(text)
    return value


def _field_ends(header: GGUFHeader) -> dict[int, int]:
    """Where each key/value ends (keyed by where it starts): the next one's start, and for the
    last one, a walk over its bytes."""
    fields = list(header.metadata.values())
    ends = {f.offset: nxt.offset for f, nxt in itertools.pairwise(fields)}
    if fields:
        ends[fields[-1].offset] = _last_field_end(header, fields[-1])
    return ends


def _last_field_end(header: GGUFHeader, field: MetadataField) -> int:
    start = field.offset + 8 + len(field.key.encode("utf-8")) + 4
    vtype = GGUFValueType[field.type]
    if vtype in _FIXED_SIZE:
        return start + _FIXED_SIZE[vtype]
    if header.path is None:
        item = GGUFValueType[field.item_type] if field.item_type else None
        if vtype is GGUFValueType.STRING:
            return start + 8 + len(str(field.value).encode("utf-8"))
        if item is not None and item in _FIXED_SIZE and field.summary is not None:
            return start + 4 + 8 + field.summary.length * _FIXED_SIZE[item]
        if isinstance(field.value, tuple):
            return start + 4 + 8 + sum(8 + len(str(v).encode("utf-8")) for v in field.value)
        raise OCIError(
            f"cannot place the last key {field.key!r} without the file: read the header "
            "from its path"
        )
    return _walk_value(header.path, start, vtype, header.byte_order)


def _walk_value(path: str, start: int, vtype: GGUFValueType, byte_order: str) -> int:
    order = "<" if byte_order == "little" else ">"
    u32, u64 = struct.Struct(order + "I"), struct.Struct(order + "Q")
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if vtype is GGUFValueType.STRING:
                return start + 8 + int(u64.unpack_from(buf, start)[0])
            item = GGUFValueType(u32.unpack_from(buf, start)[0])
            count = int(u64.unpack_from(buf, start + 4)[0])
            pos = start + 12
            if item in _FIXED_SIZE:
                return pos + count * _FIXED_SIZE[item]
            for _ in range(count):  # strings: only the length prefixes are read
                pos += 8 + int(u64.unpack_from(buf, pos)[0])
            return pos
    except (OSError, struct.error, ValueError) as exc:
        raise OCIError(
            f"cannot re-read the last key/value: {exc}", Location(path, offset=start)
        ) from None


def _architecture(kvs: Sequence[Mapping[str, Any]]) -> str:
    # gguf-parser's GGUFFile.Metadata(): a control vector's model hint, else the architecture,
    # else "llama".
    values = {kv["key"]: kv["value"] for kv in kvs}
    for key in ("controlvector.model_hint", "general.architecture"):
        if isinstance(values.get(key), str):
            return str(values[key])
    return "llama"


def _entry_file_type(gguf: Mapping[str, Any]) -> int | None:
    """llama.cpp's ftype number: general.file_type, else guessed from the tensor types."""
    header = gguf.get("header") or {}
    for kv in header.get("metadataKV") or ():
        if kv.get("key") == "general.file_type":
            value = kv.get("value")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    pairs = [(str(t.get("name", "")), t.get("type")) for t in gguf.get("tensorInfos") or ()]
    return _guess_file_type((name, kind) for name, kind in pairs if isinstance(kind, int))


def _guess_file_type(tensors: Iterable[tuple[str, int]]) -> int | None:
    items = list(tensors)
    # gguf-parser counts the block tensors ("blk.*"); a file without any (a control vector)
    # would stay unknown there, so all tensors are counted instead.
    counted = [kind for name, kind in items if name.startswith("blk")] or [k for _, k in items]
    ranking = [
        _GGML_NAMES.get(kind, "")
        for kind, _ in sorted(Counter(counted).items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    if not ranking:
        return None
    top, rest = ranking[0], ranking[1:]
    name = _SIMPLE_FTYPES.get(top)
    if top == "Q3_K":
        second = rest[0] if rest else ""
        name = {"Q4_K": "MOSTLY_Q3_K_M", "Q5_K": "MOSTLY_Q3_K_L"}.get(second, "MOSTLY_Q3_K_S")
    elif top in ("Q4_K", "Q5_K"):
        medium = len(rest) > 1 and rest[1] == "Q6_K"
        name = f"MOSTLY_{top}_{'M' if medium else 'S'}"
    if name is None or name not in LlamaFileType.__members__:
        return None
    return int(LlamaFileType[name])


def _file_type_name(code: int | None) -> str:
    """llama.cpp's name (``Q5_K_M``), not gguf-parser v0.12.0's misaligned ``IQ3_XXS/Q5_K_M``."""
    if code is None:
        return "Unknown"
    try:
        return LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return "Unknown"


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedEntry:
    """One GGUF file's entry in a seed config, checked as the seed's consumer would read it."""

    role: str  # "model", "drafter", "projector" or "adapter"
    architecture: str
    parameters: int
    bits_per_weight: float
    file_type: int  # llama.cpp ftype number (0 when absent: Go's zero value)
    cmd_value: str
    cmd_index: int
    size: int  # bytes of the file(s)
    tensor_count: int
    metadata: Mapping[str, Any]  # key -> value; arrays as {"len", "size", "startOffset", "type"}
    gguf: Mapping[str, Any]  # the GGUF object as stored


@dataclass(frozen=True)
class SeedConfig:
    model: SeedEntry
    drafter: SeedEntry | None
    projector: SeedEntry | None
    adapters: tuple[SeedEntry, ...]
    cmd: tuple[str, ...]
    labels: Mapping[str, str]
    size: int


def parse_seed_config(
    config_json: bytes | str | Mapping[str, Any], source: str | None = None
) -> SeedConfig:
    """Check an image config as gguf-packer's consumer reads it and return its GGUF entries.

    Like the seed's ``isConfigAvailable`` it rejects a config without a Model or whose Model
    has no metadata or no tensor infos; like Go's decoder it rejects values of the wrong JSON
    type (a name where a number belongs). It also rejects a CmdParameterIndex that does not
    point at its value in Cmd, where the seed's ``run`` would index past the end.
    """
    where = Location(source) if source is not None else None
    document = _decode(config_json, where)
    if not isinstance(document, Mapping):
        raise OCIError("image config is not a JSON object", where)
    inner = document.get("config")
    if not isinstance(inner, Mapping):
        raise OCIError("missing or not an object", where, key="config")
    cmd = inner.get("Cmd") or []
    if not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)):
        raise OCIError("not a list of strings", where, key="config.Cmd")
    labels = inner.get("Labels") or {}
    if not (isinstance(labels, Mapping) and all(isinstance(v, str) for v in labels.values())):
        raise OCIError("not a string-to-string object", where, key="config.Labels")
    size = _uint(inner.get("Size", 0), "config.Size", where)
    if inner.get("Model") is None:
        raise OCIError("no Model: the image names no main model", where, key="config.Model")
    model = _entry(inner["Model"], "model", "config.Model", cmd, where)
    if not model.metadata:
        raise OCIError("empty", where, key="config.Model.GGUF.header.metadataKV")
    if not model.tensor_count:
        raise OCIError("empty", where, key="config.Model.GGUF.tensorInfos")
    drafter, projector = (
        None if inner.get(k) is None else _entry(inner[k], k.lower(), f"config.{k}", cmd, where)
        for k in ("Drafter", "Projector")
    )
    adapters = inner.get("Adapters") or []
    if not isinstance(adapters, list):
        raise OCIError("not a list", where, key="config.Adapters")
    return SeedConfig(
        model,
        drafter,
        projector,
        tuple(
            _entry(a, "adapter", f"config.Adapters[{i}]", cmd, where)
            for i, a in enumerate(adapters)
        ),
        tuple(cmd),
        dict(labels),
        size,
    )


def _decode(config_json: bytes | str | Mapping[str, Any], where: Location | None) -> Any:
    if isinstance(config_json, Mapping):
        return config_json
    try:
        return json.loads(config_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        offset = getattr(exc, "pos", None) or getattr(exc, "start", None)
        path = where.path if where is not None else None
        raise OCIError(f"malformed JSON: {exc}", Location(path, offset=offset)) from None


def _entry(
    value: Any, role: str, key: str, cmd: Sequence[str], where: Location | None
) -> SeedEntry:
    if not isinstance(value, Mapping):
        raise OCIError("not an object", where, key=key)
    gguf = value.get("GGUF")
    if not isinstance(gguf, Mapping):
        raise OCIError("missing or not an object", where, key=f"{key}.GGUF")
    header = gguf.get("header")
    if not isinstance(header, Mapping):
        raise OCIError("missing or not an object", where, key=f"{key}.GGUF.header")
    for name in ("magic", "version", "tensorCount", "metadataKVCount"):
        _uint(header.get(name, 0), f"{key}.GGUF.header.{name}", where)
    kvs = header.get("metadataKV") or []
    if not isinstance(kvs, list):
        raise OCIError("not a list", where, key=f"{key}.GGUF.header.metadataKV")
    metadata: dict[str, Any] = {}
    for i, kv in enumerate(kvs):
        at = f"{key}.GGUF.header.metadataKV[{i}]"
        if not isinstance(kv, Mapping) or not isinstance(kv.get("key"), str):
            raise OCIError("not an object with a string key", where, key=at)
        if _uint(kv.get("valueType"), f"{at}.valueType", where) > max(GGUFValueType):
            raise OCIError("unknown value type", where, key=f"{at}.valueType")
        metadata[kv["key"]] = kv.get("value")
    infos = gguf.get("tensorInfos") or []
    if not isinstance(infos, list):
        raise OCIError("not a list", where, key=f"{key}.GGUF.tensorInfos")
    for i, info in enumerate(infos):
        at = f"{key}.GGUF.tensorInfos[{i}]"
        if not isinstance(info, Mapping) or not isinstance(info.get("name"), str):
            raise OCIError("not an object with a string name", where, key=at)
        for name in ("nDimensions", "type", "offset"):
            _uint(info.get(name, 0), f"{at}.{name}", where)
        dims = info.get("dimensions") or []
        if not isinstance(dims, list):
            raise OCIError("not a list", where, key=f"{at}.dimensions")
        for d, dim in enumerate(dims):
            _uint(dim, f"{at}.dimensions[{d}]", where)
    bpw = value.get("BitsPerWeight", 0)
    if not isinstance(bpw, int | float) or isinstance(bpw, bool):
        raise OCIError("not a number", where, key=f"{key}.BitsPerWeight")
    architecture = value.get("Architecture", "")
    cmd_value = value.get("CmdParameterValue", "")
    if not isinstance(architecture, str) or not isinstance(cmd_value, str):
        raise OCIError("Architecture and CmdParameterValue must be strings", where, key=key)
    cmd_index = value.get("CmdParameterIndex", 0)
    if not isinstance(cmd_index, int) or isinstance(cmd_index, bool):
        raise OCIError("not an integer", where, key=f"{key}.CmdParameterIndex")
    if cmd_value and not (0 < cmd_index < len(cmd) and cmd[cmd_index] == cmd_value):
        raise OCIError(
            f"Cmd[{cmd_index}] is not {cmd_value!r}; the consumer rewrites that argument",
            where,
            key=f"{key}.CmdParameterIndex",
        )
    return SeedEntry(
        role,
        architecture,
        _uint(value.get("Parameters", 0), f"{key}.Parameters", where),
        float(bpw),
        _uint(value.get("FileType", 0), f"{key}.FileType", where),
        cmd_value,
        cmd_index,
        _uint(gguf.get("size", 0), f"{key}.GGUF.size", where),
        len(infos),
        metadata,
        gguf,
    )


def _uint(value: Any, key: str, where: Location | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise OCIError(f"{value!r} is not an unsigned integer", where, key=key)
    return value
