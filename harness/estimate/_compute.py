"""Compute buffers: the graphs llama_context::sched_reserve reserves, scheduled across backends
and run through the allocator.

llama.cpp reserves a prompt-processing graph (one full ubatch), a token-generation graph (one
token per sequence) and the prompt graph again; each backend's buffer ends at the largest of
the three. With GPUs, the host's compute buffer is the CUDA host (pinned) buffer.
"""

from __future__ import annotations

from collections.abc import Callable

from ._alloc import Backend, allocate
from ._archs import build_graph
from ._context import ContextParams, kv_geometry
from ._ggml import Tensor, nbytes, type_size
from ._graph import GraphContext, Shape
from ._model import ModelInfo
from ._placement import HOST, Placement, cuda_alloc_size, tensor_layer
from ._sched import MAX_COPIES, schedule

__all__ = ["CPU_BACKEND", "compute_buffers", "reserve_shapes"]


def _cpu_alloc_size(t: Tensor) -> int:
    return nbytes(t.type, t.ne, t.nb)


def _cuda_alloc_size(t: Tensor) -> int:
    size = nbytes(t.type, t.ne, t.nb)
    if t.op == "FLASH_ATTN_EXT" and t.ne[2] > 1:
        # the tile/MMA kernels (any batch above one token) convert a non-f16 K and V to f16
        # in room allocated right after the result (ggml_cuda_flash_attn_ext_get_alloc_size)
        k, v = t.src[1], t.src[2]
        for part in (k, v):
            if part is not None and part.type != "F16":
                size = -(-size // 128) * 128 + part.n_elements() * type_size("F16")
    return cuda_alloc_size(t.type, t.ne[0], size)


CPU_BACKEND = Backend("CPU", 32, _cpu_alloc_size)
CUDA_BACKEND = Backend("CUDA", 128, _cuda_alloc_size)


def reserve_shapes(model: ModelInfo, cp: ContextParams) -> list[Shape]:
    """The three ubatches sched_reserve reserves graphs for, in its order."""
    geo = kv_geometry(model, cp)
    n_seqs = cp.n_seq_max
    n_tokens = min(cp.n_ctx, cp.n_ubatch)
    n_outputs_pp = min(n_tokens, cp.n_outputs_max)

    def shape(tokens: int, outputs: int) -> Shape:
        if tokens % n_seqs:
            tokens = -(-tokens // n_seqs) * n_seqs
        return Shape(
            n_tokens=tokens,
            n_seqs=n_seqs,
            n_outputs=outputs,
            n_kv=geo.size,
            n_kv_swa=geo.size_swa,
            kv_size=geo.size,
            kv_size_swa=geo.size_swa,
            n_stream=geo.n_stream,
            flash_attn=cp.flash_attn,
            type_k=cp.type_k,
            type_v=cp.type_v,
            embeddings=cp.embeddings,
            pooling=cp.pooling,
        )

    pp = shape(n_tokens, n_outputs_pp)
    return [pp, shape(n_seqs, n_seqs), pp]


def compute_buffers(
    model: ModelInfo,
    cp: ContextParams,
    placement: Placement,
    *,
    split_mode: str = "layer",
    graph_hook: Callable[[GraphContext], None] | None = None,
) -> dict[int, int]:
    """Compute buffer bytes per device (HOST for the CPU backend)."""
    n_gpus = placement.n_devices
    n_layer = model.n_layer
    pipeline = (
        n_gpus > 1 and placement.full and split_mode == "layer" and cp.offload_kqv
    )  # llama_context: pipeline parallelism keeps GGML_SCHED_MAX_COPIES of every input
    n_copies = MAX_COPIES if pipeline else 1

    def location(t: Tensor) -> int | None:
        name = t.name
        if name.startswith("cache_"):
            il = int(name.rsplit("_l", 1)[1])
            return placement.layers[il] if cp.offload_kqv else HOST
        if name == "output.weight":
            return placement.output
        layer = tensor_layer(name, n_layer)
        return HOST if layer is None else placement.layers[min(layer, n_layer)]

    def is_weight(t: Tensor) -> bool:
        return not t.name.startswith("cache_")

    backends = [CUDA_BACKEND] * n_gpus + [CPU_BACKEND]
    peak = [0] * (n_gpus + 1)
    for shape in reserve_shapes(model, cp):
        ctx = GraphContext(model, shape, separate_output=placement.output != HOST)
        graph = build_graph(ctx)
        if graph_hook is not None:
            graph_hook(ctx)
        if n_gpus:
            graph, ids = schedule(graph, n_gpus, location, is_weight, n_copies)
            sizes = allocate(graph, backends, ids, default=n_gpus)
        else:
            sizes = allocate(graph, backends)
        peak = [max(a, b) for a, b in zip(peak, sizes, strict=True)]
    result = {i: peak[i] for i in range(n_gpus)}
    result[HOST] = peak[n_gpus]
    return result
