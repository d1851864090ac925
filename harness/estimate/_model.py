"""What the estimator needs to know about a model: its hyperparameters, read as llama.cpp reads
them (llama-model.cpp ``load_hparams`` and the per-architecture ``load_arch_hparams``), and its
tensors with their byte sizes and places in the file(s).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import GGUFError, Location
from harness.gguf import GGML_QUANT_SIZES, ArraySummary, GGMLQuantizationType, GGUFHeader

__all__ = ["ModelInfo", "TensorRef", "model_info", "model_info_from_seed"]

# Architectures whose sliding-window layers follow a fixed pattern unless the file gives one
# (llama.cpp's load_swa_pattern defaults; dense_first puts the full-attention layer first).
_SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "cohere2": (4, False),
    "exaone4": (4, False),
    "gpt-oss": (2, True),
    "llama4": (4, False),
}
# Architectures llama.cpp runs with a recurrent state instead of a KV cache (llm_arch_is_recurrent).
RECURRENT = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
# Encoder-only architectures: no KV cache, attention over the batch only.
ENCODERS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
     "neo-bert", "eurobert", "t5encoder"}
)  # fmt: skip


@dataclass(frozen=True)
class TensorRef:
    """One tensor of the model: enough to size it and to find its bytes in the file."""

    name: str
    shape: tuple[int, ...]
    type: str  # ggml type name, e.g. "Q4_K"
    n_bytes: int
    start: int  # absolute offset of its data in its file
    file: int  # shard index


@dataclass(frozen=True)
class ModelInfo:
    """A model as llama.cpp loads it, reduced to what sizes its buffers."""

    arch: str
    tensors: Mapping[str, TensorRef]
    metadata: Mapping[str, Any]
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    n_ff: tuple[int, ...]
    head_k: int
    head_v: int
    head_k_swa: int
    head_v_swa: int
    n_swa: int
    is_swa: tuple[bool, ...]
    n_expert: int
    n_expert_used: int
    causal: bool
    pooling: int  # llama_pooling_type of the file; -1 unspecified
    file_sizes: tuple[int, ...]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key.format(arch=self.arch), default)

    def head_dim_k(self, il: int) -> int:
        return self.head_k_swa if self.is_swa[il] else self.head_k

    def head_dim_v(self, il: int) -> int:
        return self.head_v_swa if self.is_swa[il] else self.head_v

    def n_embd_k_gqa(self, il: int) -> int:
        return self.head_dim_k(il) * self.n_head_kv[il]

    def n_embd_v_gqa(self, il: int) -> int:
        return self.head_dim_v(il) * self.n_head_kv[il]

    @property
    def recurrent(self) -> bool:
        return self.arch in RECURRENT

    @property
    def encoder(self) -> bool:
        return self.arch in ENCODERS

    def layer_tensors(self, il: int) -> list[TensorRef]:
        prefix = f"blk.{il}."
        return [t for name, t in self.tensors.items() if name.startswith(prefix)]

    def has(self, name: str) -> bool:
        return name in self.tensors


def model_info(headers: GGUFHeader | Sequence[GGUFHeader]) -> ModelInfo:
    """Read a model from its GGUF header, or from all its shards' headers in order."""
    shards = [headers] if isinstance(headers, GGUFHeader) else list(headers)
    if not shards:
        raise ValueError("model_info needs at least one header")
    metadata = {key: field.value for key, field in shards[0].metadata.items()}
    tensors: dict[str, TensorRef] = {}
    for index, header in enumerate(shards):
        for t in header.tensors:
            start = header.data_offset + t.offset
            tensors[t.name] = TensorRef(t.name, t.shape, t.ggml_type, t.n_bytes, start, index)
    return _build(metadata, tensors, tuple(h.file_size for h in shards), shards[0].path)


def model_info_from_seed(gguf: Mapping[str, Any]) -> ModelInfo:
    """Read a model from the ``GGUF`` object of a seed image config entry (header JSON only).

    Arrays are reduced to their length there, so per-layer figures come from tensor shapes.
    """
    header = gguf.get("header") or {}
    metadata: dict[str, Any] = {}
    for kv in header.get("metadataKV") or []:
        value = kv.get("value")
        if isinstance(value, Mapping) and "len" in value:
            value = ArraySummary(str(value.get("type")), int(value["len"]))
        metadata[str(kv["key"])] = value
    starts = gguf.get("splitTensorDataStartOffsets") or [gguf.get("tensorDataStartOffset", 0)]
    tensors: dict[str, TensorRef] = {}
    file = 0
    for info in gguf.get("tensorInfos") or []:
        shape = tuple(int(d) for d in info.get("dimensions") or [])
        kind = GGMLQuantizationType(int(info["type"]))
        block, size = GGML_QUANT_SIZES[kind]
        n_bytes = math.prod(shape) // block * size
        offset = int(info.get("offset", 0))
        name = str(info["name"])
        tensors[name] = TensorRef(name, shape, kind.name, n_bytes, int(starts[file]) + offset, file)
    sizes = tuple(int(s) for s in gguf.get("splitSizes") or [gguf.get("size", 0)])
    return _build(metadata, tensors, sizes, None)


def _build(
    meta: Mapping[str, Any],
    tensors: Mapping[str, TensorRef],
    sizes: tuple[int, ...],
    path: str | None,
) -> ModelInfo:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise GGUFError("no general.architecture: not a model llama.cpp can load", Location(path))

    def key(name: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{name}", default)

    n_layer = _int(key("block_count"), 0)
    n_embd = _int(key("embedding_length"), 0)
    n_head = _per_layer(key("attention.head_count"), n_layer, 0)
    n_head_kv = _per_layer(key("attention.head_count_kv"), n_layer, -1)
    n_ff = _per_layer(key("feed_forward_length"), n_layer, 0)
    first_head = next((h for h in n_head if h), 0)
    head_k = _int(key("attention.key_length"), n_embd // first_head if first_head else 0)
    head_v = _int(key("attention.value_length"), n_embd // first_head if first_head else 0)
    # a per-layer array reduced to its length (seed configs) reads as unknown: the Q and K
    # projections' rows say what each layer has
    n_head = _heads_from_tensors(tensors, n_layer, n_head, head_k, "attn_q")
    n_head_kv = _heads_from_tensors(tensors, n_layer, n_head_kv, head_k, "attn_k")
    n_head_kv = tuple(h if kv < 0 else kv for h, kv in zip(n_head, n_head_kv, strict=True))
    n_swa = _int(key("attention.sliding_window"), 0)
    is_swa = _swa_layers(arch, meta, n_layer, n_swa)
    token_embd = tensors.get("token_embd.weight")
    vocab = _int(key("vocab_size"), 0)
    if not vocab:
        tokens = meta.get("tokenizer.ggml.tokens")
        if isinstance(tokens, ArraySummary):
            vocab = tokens.length
        elif isinstance(tokens, tuple):
            vocab = len(tokens)
        elif token_embd is not None and len(token_embd.shape) > 1:
            vocab = token_embd.shape[1]
    causal = key("attention.causal")
    return ModelInfo(
        arch=arch,
        tensors=dict(tensors),
        metadata=dict(meta),
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=vocab,
        n_ctx_train=_int(key("context_length"), 0),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=n_ff,
        head_k=head_k,
        head_v=head_v,
        head_k_swa=_int(key("attention.sliding_window.key_length"), head_k),
        head_v_swa=_int(key("attention.sliding_window.value_length"), head_v),
        n_swa=n_swa,
        is_swa=is_swa,
        n_expert=_int(key("expert_count"), 0),
        n_expert_used=_int(key("expert_used_count"), 0),
        causal=bool(causal) if isinstance(causal, bool) else arch not in ENCODERS,
        pooling=_int(key("pooling_type"), -1),
        file_sizes=sizes,
    )


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def _per_layer(value: Any, n_layer: int, default: int) -> tuple[int, ...]:
    if isinstance(value, tuple) and len(value) == n_layer:
        return tuple(int(v) for v in value)
    return (_int(value, default),) * n_layer


def _heads_from_tensors(
    tensors: Mapping[str, TensorRef], n_layer: int, heads: tuple[int, ...], head_k: int, name: str
) -> tuple[int, ...]:
    if not head_k or all(h > 0 for h in heads):
        return heads
    found = list(heads)
    for il in range(n_layer):
        w = tensors.get(f"blk.{il}.{name}.weight")
        if found[il] <= 0 and w is not None and len(w.shape) >= 2 and w.shape[1] % head_k == 0:
            found[il] = w.shape[1] // head_k
    return tuple(found)


def _swa_layers(arch: str, meta: Mapping[str, Any], n_layer: int, n_swa: int) -> tuple[bool, ...]:
    if n_swa <= 0:
        return (False,) * n_layer
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, tuple) and len(pattern) == n_layer:
        return tuple(bool(p) for p in pattern)
    default = _SWA_PATTERNS.get(arch)
    if default is None:
        return (False,) * n_layer
    n_pattern, dense_first = default
    if isinstance(pattern, int) and not isinstance(pattern, bool):
        n_pattern = pattern
    if dense_first:
        return tuple(n_pattern == 0 or il % n_pattern != 0 for il in range(n_layer))
    return tuple(n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n_layer))
