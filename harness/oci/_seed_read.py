"""Reading a seed image config as gguf-packer's consumer reads it (docs/image-format.md §7)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import Location, OCIError
from harness.gguf import FileType, GGUFValueType, Keys, file_type

from ._media import shown

__all__ = ["SeedConfig", "SeedEntry", "parse_seed_config"]


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

    @property
    def derived_file_type(self) -> FileType:
        """The file type by harness.gguf's rule (llama.cpp's) from the stored metadata and tensor
        types. ``file_type`` and the filetype label may be another tool's guess or name: the
        seed's gguf-parser guesses K-quant mixes its own way and misnames numbers above 10."""
        infos = self.gguf.get("tensorInfos") or ()
        tensors = ((str(i["name"]), int(i.get("type", 0))) for i in infos)
        return file_type(self.metadata.get(Keys.General.FILE_TYPE), tensors)


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
    except RecursionError:
        raise OCIError("JSON nested too deeply", where) from None
    except ValueError as exc:  # an integer past Python's 4,300 digits
        raise OCIError(f"malformed JSON: {exc}", where) from None


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
            f"Cmd[{cmd_index}] is not {shown(cmd_value)}; the consumer rewrites that argument",
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
        raise OCIError(f"{shown(value)} is not an unsigned integer", where, key=key)
    return value
