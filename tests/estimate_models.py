"""Tiny GGUF models of several architectures, written at test time with gguf.GGUFWriter.

Random weights, a byte-fallback SPM vocabulary, and just the metadata llama.cpp's loader wants:
enough for llama.cpp to load the model and build every buffer, which is all the memory tests
need. Matrices are Q8_0 (quantized sizes), token embeddings F16, norms F32. Each writer takes
about 50 ms and is deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BERT_SETTINGS",
    "BIG_NO_FA",
    "DECODER_SETTINGS",
    "MAMBA_SETTINGS",
    "SYNTHETIC",
    "TinySpec",
    "minilm_gguf",
    "write_gemma3",
    "write_llama",
    "write_mamba",
    "write_moe",
    "write_qwen",
]

_Q8 = "Q8_0"


@dataclass(frozen=True)
class TinySpec:
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 8
    n_head_kv: int = 2
    head_dim: int = 32
    n_ff: int = 512
    n_vocab: int = 1024
    n_ctx: int = 32768
    matrix_type: str = "Q8_0"  # Q4_0: the weights llama-server repacks on AVX2 CPUs
    # Sparse: tensor infos only, the data a hole (the file's size is real, nothing is written):
    # a released model's shape at no cost in time or disk. Types then follow a Q4_K_M-like mix.
    sparse: bool = False


class _Writer:
    def __init__(self, path: Path, arch: str, spec: TinySpec, seed: int) -> None:
        import gguf

        self.gguf = gguf
        self.rng = np.random.default_rng(seed)
        self.w = gguf.GGUFWriter(str(path), arch)
        self.spec = spec
        self.path = path
        w = self.w
        w.add_name(f"tiny-{arch}")
        w.add_context_length(spec.n_ctx)
        w.add_embedding_length(spec.n_embd)
        w.add_block_count(spec.n_layer)
        w.add_file_type(
            gguf.LlamaFileType.MOSTLY_Q4_K_M
            if spec.sparse
            else gguf.LlamaFileType[f"MOSTLY_{spec.matrix_type}"]
        )
        _vocab(w, spec.n_vocab)

    def _info(self, name: str, shape: tuple[int, ...], kind: object) -> None:
        # numpy order (the reverse of ggml's): the writer takes element shapes with a raw dtype
        qtype = self.gguf.GGMLQuantizationType[str(kind)]
        block, size = self.gguf.GGML_QUANT_SIZES[qtype]
        n = int(np.prod(shape))
        self.w.add_tensor_info(name, shape, np.dtype(np.float32), n // block * size, qtype)

    def _sparse_type(self, name: str, cols: int) -> str:
        """llama-quantize's Q4_K_M mix, roughly: Q6_K for the LM head, V and half of the FFN
        down projections, Q4_K elsewhere; Q8_0 or F16 where rows do not fill 256-blocks."""
        if cols % 256:
            return "Q8_0" if cols % 32 == 0 else "F16"
        layer = name.split(".")[1] if name.startswith("blk.") else ""
        if name == "output.weight" or "attn_v" in name:
            return "Q6_K"
        if "ffn_down" in name and layer.isdigit() and int(layer) % 2 == 0:
            return "Q6_K"
        return "Q4_K"

    def matrix(self, name: str, rows: int, cols: int, quantize: bool = True) -> None:
        if self.spec.sparse:
            embeddings = name == "token_embd.weight"
            kind = self._sparse_type(name, cols) if quantize or embeddings else "F32"
            self._info(name, (rows, cols), kind)
            return
        data = (self.rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        if quantize and cols % 32 == 0:
            kind = self.gguf.GGMLQuantizationType[self.spec.matrix_type]
            self.w.add_tensor(name, self.gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            self.w.add_tensor(name, data.astype(np.float16))

    def tensor(self, name: str, shape: tuple[int, ...], fill: float | None = None) -> None:
        if self.spec.sparse:
            self._info(name, shape, "F32")
            return
        if fill is None:
            data = self.rng.standard_normal(shape).astype(np.float32) * 0.1
        else:
            data = np.full(shape, fill, dtype=np.float32)
        self.w.add_tensor(name, data)

    def experts(self, name: str, n_expert: int, rows: int, cols: int) -> None:
        if self.spec.sparse:
            self._info(name, (n_expert, rows, cols), self._sparse_type(name, cols))
            return
        data = (self.rng.standard_normal((n_expert, rows, cols)) / np.sqrt(cols)).astype(np.float32)
        kind = self.gguf.GGMLQuantizationType[self.spec.matrix_type]
        self.w.add_tensor(name, self.gguf.quants.quantize(data, kind), raw_dtype=kind)

    def close(self) -> Path:
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        if not self.spec.sparse:
            self.w.write_tensors_to_file()
            self.w.close()
            return self.path
        self.w.write_ti_data_to_file()
        out = self.w.fout[0]
        alignment = self.w.data_alignment
        start = -(-out.tell() // alignment) * alignment
        data = sum(-(-ti.nbytes // alignment) * alignment for ti in self.w.tensors[0].values())
        out.truncate(start + data)  # a hole: reads as zeros, costs no disk
        self.w.close()
        return self.path


def _vocab(w: object, n_vocab: int) -> None:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581t{i}" for i in range(n_vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259)
    w.add_tokenizer_model("llama")  # type: ignore[attr-defined]
    w.add_token_list(tokens)  # type: ignore[attr-defined]
    w.add_token_scores([0.0] * n_vocab)  # type: ignore[attr-defined]
    w.add_token_types(types)  # type: ignore[attr-defined]
    w.add_bos_token_id(1)  # type: ignore[attr-defined]
    w.add_eos_token_id(2)  # type: ignore[attr-defined]
    w.add_unk_token_id(0)  # type: ignore[attr-defined]


def _attention_block(t: _Writer, il: int, qk_norm: bool, bias: bool = False) -> None:
    s = t.spec
    p = f"blk.{il}."
    t.tensor(p + "attn_norm.weight", (s.n_embd,), 1.0)
    t.matrix(p + "attn_q.weight", s.n_head * s.head_dim, s.n_embd)
    t.matrix(p + "attn_k.weight", s.n_head_kv * s.head_dim, s.n_embd)
    t.matrix(p + "attn_v.weight", s.n_head_kv * s.head_dim, s.n_embd)
    if bias:
        t.tensor(p + "attn_q.bias", (s.n_head * s.head_dim,), 0.0)
        t.tensor(p + "attn_k.bias", (s.n_head_kv * s.head_dim,), 0.0)
        t.tensor(p + "attn_v.bias", (s.n_head_kv * s.head_dim,), 0.0)
    t.matrix(p + "attn_output.weight", s.n_embd, s.n_head * s.head_dim)
    if qk_norm:
        t.tensor(p + "attn_q_norm.weight", (s.head_dim,), 1.0)
        t.tensor(p + "attn_k_norm.weight", (s.head_dim,), 1.0)
    t.tensor(p + "ffn_norm.weight", (s.n_embd,), 1.0)


def _attention_keys(t: _Writer, arch: str) -> None:
    s, w = t.spec, t.w
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_rope_dimension_count(s.head_dim)
    w.add_feed_forward_length(s.n_ff)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)


def write_llama(path: Path, spec: TinySpec | None = None, *, seed: int = 0) -> Path:
    """A Llama with grouped-query attention (8 query heads, 2 KV heads) and its own LM head."""
    spec = spec or TinySpec()
    t = _Writer(path, "llama", spec, seed)
    _attention_keys(t, "llama")
    t.w.add_vocab_size(spec.n_vocab)
    t.matrix("token_embd.weight", spec.n_vocab, spec.n_embd, quantize=False)
    t.tensor("output_norm.weight", (spec.n_embd,), 1.0)
    t.matrix("output.weight", spec.n_vocab, spec.n_embd)
    for il in range(spec.n_layer):
        _attention_block(t, il, qk_norm=False)
        t.matrix(f"blk.{il}.ffn_gate.weight", spec.n_ff, spec.n_embd)
        t.matrix(f"blk.{il}.ffn_up.weight", spec.n_ff, spec.n_embd)
        t.matrix(f"blk.{il}.ffn_down.weight", spec.n_embd, spec.n_ff)
    return t.close()


def write_qwen(path: Path, spec: TinySpec | None = None, *, seed: int = 4, v3: bool = True) -> Path:
    """A Qwen3 (Q/K norms, tied LM head) or, with ``v3=False``, a Qwen2 (Q/K/V biases)."""
    spec = spec or TinySpec()
    arch = "qwen3" if v3 else "qwen2"
    t = _Writer(path, arch, spec, seed)
    _attention_keys(t, arch)
    t.matrix("token_embd.weight", spec.n_vocab, spec.n_embd, quantize=False)
    t.tensor("output_norm.weight", (spec.n_embd,), 1.0)
    if not v3:
        t.matrix("output.weight", spec.n_vocab, spec.n_embd)
    for il in range(spec.n_layer):
        _attention_block(t, il, qk_norm=v3, bias=not v3)
        t.matrix(f"blk.{il}.ffn_gate.weight", spec.n_ff, spec.n_embd)
        t.matrix(f"blk.{il}.ffn_up.weight", spec.n_ff, spec.n_embd)
        t.matrix(f"blk.{il}.ffn_down.weight", spec.n_embd, spec.n_ff)
    return t.close()


def write_moe(
    path: Path, spec: TinySpec | None = None, *, seed: int = 1, experts: int = 4, used: int = 2
) -> Path:
    """A Mixtral-style Llama: every FFN is ``experts`` SiLU-gated experts, ``used`` per token."""
    spec = spec or TinySpec(n_ff=256)
    t = _Writer(path, "llama", spec, seed)
    _attention_keys(t, "llama")
    t.w.add_expert_count(experts)
    t.w.add_expert_used_count(used)
    t.matrix("token_embd.weight", spec.n_vocab, spec.n_embd, quantize=False)
    t.tensor("output_norm.weight", (spec.n_embd,), 1.0)
    t.matrix("output.weight", spec.n_vocab, spec.n_embd)
    for il in range(spec.n_layer):
        _attention_block(t, il, qk_norm=False)
        t.matrix(f"blk.{il}.ffn_gate_inp.weight", experts, spec.n_embd, quantize=False)
        t.experts(f"blk.{il}.ffn_gate_exps.weight", experts, spec.n_ff, spec.n_embd)
        t.experts(f"blk.{il}.ffn_up_exps.weight", experts, spec.n_ff, spec.n_embd)
        t.experts(f"blk.{il}.ffn_down_exps.weight", experts, spec.n_embd, spec.n_ff)
    return t.close()


def write_gemma3(
    path: Path, spec: TinySpec | None = None, *, seed: int = 2, window: int = 256
) -> Path:
    """A Gemma-3: five sliding-window layers per full-attention layer, Q/K norms, post-norms,
    GELU FFN and the LM head tied to the token embeddings."""
    spec = spec or TinySpec(n_layer=7, n_head=4, n_head_kv=1, head_dim=64)
    t = _Writer(path, "gemma3", spec, seed)
    _attention_keys(t, "gemma3")
    t.w.add_sliding_window(window)
    t.matrix("token_embd.weight", spec.n_vocab, spec.n_embd, quantize=False)
    t.tensor("output_norm.weight", (spec.n_embd,), 1.0)
    for il in range(spec.n_layer):
        _attention_block(t, il, qk_norm=True)
        p = f"blk.{il}."
        t.tensor(p + "post_attention_norm.weight", (spec.n_embd,), 1.0)
        t.tensor(p + "post_ffw_norm.weight", (spec.n_embd,), 1.0)
        t.matrix(p + "ffn_gate.weight", spec.n_ff, spec.n_embd)
        t.matrix(p + "ffn_up.weight", spec.n_ff, spec.n_embd)
        t.matrix(p + "ffn_down.weight", spec.n_embd, spec.n_ff)
    return t.close()


def write_mamba(path: Path, spec: TinySpec | None = None, *, seed: int = 3) -> Path:
    """A Mamba (selective state space, no attention): state per sequence, no KV cache."""
    spec = spec or TinySpec(n_embd=128, n_layer=3, n_vocab=512)
    d_inner, d_conv, d_state, dt_rank = 2 * spec.n_embd, 4, 16, 8
    t = _Writer(path, "mamba", spec, seed)
    w = t.w
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    w.add_layer_norm_rms_eps(1e-5)
    t.matrix("token_embd.weight", spec.n_vocab, spec.n_embd, quantize=False)
    t.tensor("output_norm.weight", (spec.n_embd,), 1.0)
    t.matrix("output.weight", spec.n_vocab, spec.n_embd)
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        t.tensor(p + "attn_norm.weight", (spec.n_embd,), 1.0)
        t.matrix(p + "ssm_in.weight", 2 * d_inner, spec.n_embd)
        t.tensor(p + "ssm_conv1d.weight", (d_inner, d_conv))
        t.tensor(p + "ssm_conv1d.bias", (d_inner,), 0.0)
        t.matrix(p + "ssm_x.weight", dt_rank + 2 * d_state, d_inner)
        t.matrix(p + "ssm_dt.weight", d_inner, dt_rank, quantize=False)
        t.tensor(p + "ssm_dt.bias", (d_inner,), 0.0)
        t.tensor(p + "ssm_a", (d_inner, d_state), -1.0)
        t.tensor(p + "ssm_d", (d_inner,), 1.0)
        t.matrix(p + "ssm_out.weight", spec.n_embd, d_inner)
    return t.close()


#: name -> writer, for parametrized tests
SYNTHETIC: dict[str, Callable[[Path], Path]] = {
    "llama-gqa": write_llama,
    "moe": write_moe,
    "gemma3-swa": write_gemma3,
    "mamba": write_mamba,
    "qwen3": write_qwen,
    "qwen2": lambda path: write_qwen(path, v3=False),
    "llama-q4_0": lambda path: write_llama(path, TinySpec(matrix_type="Q4_0")),
    "moe-q4_0": lambda path: write_moe(path, TinySpec(n_ff=256, matrix_type="Q4_0")),
}


def minilm_gguf(dest_dir: Path) -> Path | None:
    """all-MiniLM-L6-v2 (BERT) converted to F16 GGUF by llama.cpp's converter, or None when the
    package or the converter's dependencies are missing. Reuses an earlier conversion in
    ``dest_dir``."""
    from tests.models import minilm_dir, missing_converter_modules

    target = dest_dir / "all-MiniLM-L6-v2.F16.gguf"
    if target.is_file():
        return target
    source = minilm_dir()
    if source is None or missing_converter_modules():
        return None
    from harness.toolchain import convert

    dest_dir.mkdir(parents=True, exist_ok=True)
    return convert(source, target, out_type="F16")


# (model, settings) pairs measured against llama.cpp: contexts from 512 to 32k, flash attention
# on and off, f16 and q8_0 caches, one or several sequences, unified KV or one stream each.
DECODER_SETTINGS: tuple[dict[str, object], ...] = (
    {"ctx_size": 512, "parallel": 1, "flash_attn": False},
    {"ctx_size": 4096, "flash_attn": True},
    {"ctx_size": 8192, "parallel": 2, "kv_unified": False, "flash_attn": False},
    {"ctx_size": 2048, "flash_attn": False, "cache_type_k": "q8_0"},
    {"ctx_size": 16384, "flash_attn": True, "cache_type_k": "q8_0", "cache_type_v": "q8_0"},
    {"ctx_size": 32768, "flash_attn": True, "mmap": False},
)
BIG_NO_FA: dict[str, object] = {"ctx_size": 32768, "parallel": 1, "flash_attn": False}
BERT_SETTINGS: tuple[dict[str, object], ...] = (
    {"embeddings": True},
    {"embeddings": True, "flash_attn": False, "parallel": 1},
    {"embeddings": True, "pooling": "cls", "ubatch_size": 256, "flash_attn": False},
)
MAMBA_SETTINGS: tuple[dict[str, object], ...] = (
    {"ctx_size": 512, "parallel": 1},
    {"ctx_size": 32768},
    {"ctx_size": 4096, "parallel": 3, "kv_unified": False, "ubatch_size": 256},
)
