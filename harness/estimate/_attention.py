"""Attention (llama-graph.cpp ``build_attn`` and ``build_attn_mha``, llama-kv-cache.cpp
``cpy_k``/``cpy_v``/``get_k``/``get_v``): storing the new K and V into the cache, viewing the
cache back, and the attention itself, with flash attention or as explicit scores.
"""

from __future__ import annotations

from . import _ops as op
from ._ggml import Tensor, row_size
from ._graph import GraphContext

__all__ = ["attn_kv", "attn_mha", "attn_out"]


def hadamard(ctx: GraphContext, cur: Tensor, rot: Tensor) -> Tensor:
    n = rot.ne[0]
    if cur.is_contiguous():
        res = op.reshape(cur, (n, cur.n_elements() // n))
    else:
        res = op.cont_nd(cur, (n, cur.n_elements() // n))
    res = op.mul_mat(rot, res)
    return op.reshape(res, cur.ne)


def cpy_k(ctx: GraphContext, il: int, swa: bool, k_cur: Tensor, k_idxs: Tensor) -> Tensor:
    k = ctx.cache("k", il, swa)
    n_gqa = k_cur.ne[0] * k_cur.ne[1]
    k_cur = op.view_nd(k_cur, (n_gqa, k_cur.ne[2]), (k_cur.nb[2],))
    if k.ne[2] > 1:
        k = op.reshape(k, (n_gqa, k.ne[1] * k.ne[2]))
    return op.set_rows(k, k_cur, k_idxs)


def cpy_v(ctx: GraphContext, il: int, swa: bool, v_cur: Tensor, v_idxs: Tensor) -> Tensor:
    v = ctx.cache("v", il, swa)
    n_gqa = v_cur.ne[0] * v_cur.ne[1]
    n_tok = v_cur.ne[2]
    if not ctx.v_trans:
        v_cur = op.view_nd(v_cur, (n_gqa, n_tok), (v_cur.nb[2],))
        if v.ne[2] > 1:
            v = op.reshape(v, (n_gqa, v.ne[1] * v.ne[2]))
        return op.set_rows(v, v_cur, v_idxs)
    if row_size(v_cur.type, n_gqa) == v_cur.nb[2]:
        v_cur = op.reshape(v_cur, (n_gqa, n_tok))
    else:
        v_cur = op.cont_nd(v_cur, (n_gqa, n_tok))
    if n_gqa < v.ne[0]:
        v_cur = op.pad(v_cur, v.ne[0] - n_gqa)
    v_view = op.reshape(v, (1, v.n_elements()))
    v_cur = op.reshape(v_cur, (1, v_cur.n_elements()))
    return op.set_rows(v_view, v_cur, v_idxs)


def get_k(ctx: GraphContext, il: int, swa: bool) -> Tensor:
    m, s = ctx.model, ctx.shape
    k = ctx.cache("k", il, swa)
    hk, gqa, size = m.head_dim_k(il), k.ne[0], k.ne[1]
    n_kv = s.n_kv_swa if swa else s.n_kv
    nb = (row_size(k.type, hk), row_size(k.type, gqa), row_size(k.type, gqa * size))
    return op.view_nd(k, (hk, m.n_head_kv[il], n_kv, k.ne[2]), nb)


def get_v(ctx: GraphContext, il: int, swa: bool) -> Tensor:
    m, s = ctx.model, ctx.shape
    v = ctx.cache("v", il, swa)
    hv, gqa, size = m.head_dim_v(il), v.ne[0], v.ne[1]
    n_kv = s.n_kv_swa if swa else s.n_kv
    if not ctx.v_trans:
        nb = (row_size(v.type, hv), row_size(v.type, gqa), row_size(v.type, gqa * size))
        return op.view_nd(v, (hv, m.n_head_kv[il], n_kv, v.ne[2]), nb)
    nb = (row_size(v.type, size * hv), row_size(v.type, size), row_size(v.type, size * gqa))
    return op.view_nd(v, (n_kv, m.n_head_kv[il], hv, v.ne[2]), nb)


def attn_mha(
    ctx: GraphContext, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, softcap: bool = False
) -> Tensor:
    n_stream = k.ne[3]
    q = op.view_nd(
        q, (q.ne[0], q.ne[1], q.ne[2] // n_stream, n_stream),
        (q.nb[1], q.nb[2], q.nb[2] * (q.ne[2] // n_stream)),
    )  # fmt: skip
    v_trans = v.nb[1] > v.nb[2]
    q = op.permute(q, (0, 2, 1, 3))
    k = op.permute(k, (0, 2, 1, 3))
    v = op.permute(v, (0, 2, 1, 3))
    if ctx.shape.flash_attn:
        if v_trans:
            v = op.transpose(v)
        if k.type == "F32":
            k = op.cast(k, "F16")
        if v.type == "F32":
            v = op.cast(v, "F16")
        cur = op.flash_attn_ext(q, k, v, mask)
        cur = op.reshape(cur, (cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3]))
    else:
        kq = op.mul_mat(k, q)
        if softcap:
            kq = op.unary(op.scale(kq))
            kq = op.scale(kq)
        kq = op.soft_max(kq, mask)
        if not v_trans:
            v = op.cont(op.transpose(v))
        kqv = op.mul_mat(v, kq)
        cur = op.permute(kqv, (0, 2, 1, 3))
        cur = op.cont_nd(cur, (cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3]))
    ctx.gf.expand(cur)
    return cur


def attn_kv(
    ctx: GraphContext,
    il: int,
    inputs: tuple[Tensor, Tensor, Tensor],
    q: Tensor,
    k: Tensor,
    v: Tensor,
    swa: bool = False,
    iswa_order: bool = False,
    softcap: bool = False,
) -> Tensor:
    """build_attn over the KV cache (kv and kv_iswa variants), then the output projection."""
    k_idxs, v_idxs, mask = inputs
    k_rot = ctx.k_rot_swa if swa else ctx.k_rot
    v_rot = ctx.v_rot_swa if swa else ctx.v_rot
    if k_rot is not None:
        q = hadamard(ctx, q, k_rot)
        k = hadamard(ctx, k, k_rot)
    if v_rot is not None:
        v = hadamard(ctx, v, v_rot)
    # kv expands q, v, k (k last for rope fusion); kv_iswa expands q, k, v
    for t in (q, k, v) if iswa_order else (q, v, k):
        ctx.gf.expand(t)
    ctx.gf.expand(cpy_k(ctx, il, swa, k, k_idxs))
    ctx.gf.expand(cpy_v(ctx, il, swa, v, v_idxs))
    cur = attn_mha(ctx, q, get_k(ctx, il, swa), get_v(ctx, il, swa), mask, softcap)
    if v_rot is not None:
        cur = hadamard(ctx, cur, v_rot)
    return attn_out(ctx, il, cur)


def attn_out(ctx: GraphContext, il: int, cur: Tensor) -> Tensor:
    wo = ctx.w(f"blk.{il}.attn_output.weight")
    if wo is not None:
        cur = ctx.lora_mm(wo, cur)
    wo_b = ctx.w(f"blk.{il}.attn_output.bias")
    if wo_b is not None:
        cur = op.add(cur, wo_b)
    return cur
