"""KV cache and recurrent-state buffers per device (llama-kv-cache.cpp, llama-kv-cache-iswa.cpp,
llama-memory-recurrent.cpp).

Per layer, K is ``n_embd_k_gqa`` elements per cell and V ``n_embd_v_gqa`` (padded to the widest
layer when V is stored transposed, i.e. without flash attention); MLA models keep only K. The
cells are the padded per-sequence context times the number of streams (one when the cache is
unified). Sliding-window layers keep ``n_swa`` cells per sequence plus one ubatch, padded to 256.
Recurrent layers keep a conv state (r) and an SSM/WKV state (s) per sequence, in f32.
Each tensor is padded to its buffer's alignment, the CUDA padding of quantized rows included.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._context import ContextParams, kv_geometry
from ._ggml import row_size
from ._model import ModelInfo
from ._placement import HOST, Placement, cuda_alloc_size

__all__ = ["KVLayout", "kv_bytes", "recurrent_widths"]


@dataclass(frozen=True)
class KVLayout:
    """Bytes of the KV cache (or recurrent state) per device, and the cells it holds."""

    per_device: dict[int, int]
    cells: int
    cells_swa: int


def _pad(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def _tensor(type_name: str, width: int, rows: int, device: int) -> int:
    n_bytes = row_size(type_name, width) * rows
    if device == HOST:
        return _pad(n_bytes, 32)
    return _pad(cuda_alloc_size(type_name, width, n_bytes), 128)


def recurrent_widths(model: ModelInfo) -> tuple[int, int]:
    """n_embd_r and n_embd_s (llama_hparams) of a recurrent model."""
    get = model.get
    wkv_head = int(get("{arch}.wkv.head_size", 0) or 0)
    if wkv_head:
        shift = int(get("{arch}.token_shift_count", 2) or 2)
        return shift * model.n_embd, model.n_embd * wkv_head
    d_conv = int(get("{arch}.ssm.conv_kernel", 0) or 0)
    d_inner = int(get("{arch}.ssm.inner_size", 0) or 0)
    d_state = int(get("{arch}.ssm.state_size", 0) or 0)
    n_group = int(get("{arch}.ssm.group_count", 0) or 0)
    n_conv = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state)
    return n_conv, d_state * d_inner


def kv_bytes(model: ModelInfo, cp: ContextParams, placement: Placement) -> KVLayout:
    out: dict[int, int] = {}

    def device_of(il: int) -> int:
        return placement.layers[il] if cp.offload_kqv else HOST

    if model.recurrent:
        width_r, width_s = recurrent_widths(model)
        rows = max(1, cp.n_seq_max)
        for il in range(model.n_layer):
            d = device_of(il)
            out[d] = (
                out.get(d, 0) + _tensor("F32", width_r, rows, d) + _tensor("F32", width_s, rows, d)
            )
        return KVLayout(out, rows, 0)
    if model.encoder:
        return KVLayout({}, 0, 0)
    geo = kv_geometry(model, cp)
    mla = model.get("{arch}.attention.key_length_mla") is not None
    v_trans = not cp.flash_attn
    v_max = max((model.n_embd_v_gqa(il) for il in range(model.n_layer)), default=0)
    for il in range(model.n_layer):
        d = device_of(il)
        cells = (geo.size_swa if model.is_swa[il] else geo.size) * geo.n_stream
        size = _tensor(cp.type_k, model.n_embd_k_gqa(il), cells, d)
        if not mla:
            width = v_max if v_trans else model.n_embd_v_gqa(il)
            size += _tensor(cp.type_v, width, cells, d)
        out[d] = out.get(d, 0) + size
    return KVLayout(out, geo.size * geo.n_stream, geo.size_swa * geo.n_stream)
