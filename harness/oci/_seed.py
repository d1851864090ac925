"""The image config GGUF Packer (gguf-packer-go v0.1.21, gguf-parser-go v0.12.0) writes.

docs/image-format.md gives every field with the line of Go it comes from. In short: the config's
``config`` object holds only Size, Model, Drafter, Projector, Adapters, Cmd and Labels (Go's
``omitempty`` drops the empty ones); each GGUF file is gguf-parser's ``GGUFFile`` JSON read with
SkipLargeMetadata (every array reduced to type/len/startOffset/size) plus the seed's summary
fields. Enumerations are JSON numbers, as Go's encoder writes them, so that the seed's own
consumer (which unmarshals into uint32 fields) can read what we write.

What the entry says of the GGUF (file type, parameters) comes from harness.gguf, the same rule
``inspect`` and model.yaml checks use; key/values are written by _seed_kv, and a config is read
back by _seed_read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from harness.errors import OCIError
from harness.gguf import GGUFHeader, file_type_name, model_file_type

from ._seed_kv import go_trim, kv_json
from ._seed_read import SeedConfig, SeedEntry, parse_seed_config

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

    A split model is given as all its shards' headers, in order.
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
        kvs.extend(kv_json(f) for f in fields)
        position = max((f.end for f in one.metadata.values()), default=_HEADER_BYTES)
        for info in one.tensors:
            name_bytes = len(info.name.encode("utf-8"))
            tensors.append(
                {
                    "name": go_trim(info.name),
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
    # llama.cpp's count (a 0-dim tensor holds one element; gguf-parser counts none).
    parameters = sum(t.n_elements for h in headers for t in h.tensors)
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
    file_type = model_file_type(headers).code
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
    # The number gguf_entry chose by harness.gguf's rule, named as harness.gguf names it.
    put(file_type_name(int(model.get("FileType", 0))), "gguf.model.filetype")
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


def _architecture(kvs: Sequence[Mapping[str, Any]]) -> str:
    # gguf-parser's GGUFFile.Metadata(): a control vector's model hint, else the architecture,
    # else "llama".
    values = {kv["key"]: kv["value"] for kv in kvs}
    for key in ("controlvector.model_hint", "general.architecture"):
        if isinstance(values.get(key), str):
            return str(values[key])
    return "llama"
