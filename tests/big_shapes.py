"""Sparse GGUFs with the shapes of models people release: metadata and tensor infos as llama.cpp's
converter writes them, a Q4_K_M-like type mix, and the tensor data a hole (the file has its real
size but takes no disk and no time to write). llama-server loads them with ``--no-warmup``: mmap
never reads a hole, so the buffers it prints are those of the real model.

Shapes from each model's published config.json (hidden size, layers, heads, KV heads, head
dimension, FFN size, vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.estimate_models import TinySpec, write_gemma3, write_llama, write_moe, write_qwen

__all__ = ["BIG_SHAPES"]


def _llama(spec: TinySpec) -> Callable[[Path], Path]:
    return lambda path: write_llama(path, spec)


#: name -> writer of a sparse file with that model's shapes
BIG_SHAPES: dict[str, Callable[[Path], Path]] = {
    "llama-3.1-8b": _llama(TinySpec(4096, 32, 32, 8, 128, 14336, 128256, 131072, sparse=True)),
    "llama-3.1-70b": _llama(TinySpec(8192, 80, 64, 8, 128, 28672, 128256, 131072, sparse=True)),
    # a head dimension (128) that is not n_embd / n_head (5120 / 32 = 160)
    "mistral-nemo-12b": _llama(TinySpec(5120, 40, 32, 8, 128, 14336, 131072, 131072, sparse=True)),
    "qwen2.5-7b": lambda path: write_qwen(
        path, TinySpec(3584, 28, 28, 4, 128, 18944, 152064, 32768, sparse=True), v3=False
    ),
    "gemma-3-4b": lambda path: write_gemma3(
        path, TinySpec(2560, 34, 8, 4, 256, 10240, 262144, 131072, sparse=True), window=1024
    ),
    "gemma-3-27b": lambda path: write_gemma3(
        path, TinySpec(5376, 62, 32, 16, 128, 21504, 262144, 131072, sparse=True), window=1024
    ),
    "mixtral-8x7b": lambda path: write_moe(
        path, TinySpec(4096, 32, 32, 8, 128, 14336, 32000, 32768, sparse=True), experts=8
    ),
}
