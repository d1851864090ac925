"""Recurrent-state architectures: the mamba graph (llama.cpp src/models/mamba.cpp and
mamba-base.cpp ``build_mamba_layer``), with the state copies of llm_graph_context::build_rs.

The recurrent state holds one row per sequence (``n_seq_max``); at reservation every row is in
use, so the state rows read are the first ``n_seqs`` and the rest are copied through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from . import _ops as op
from ._ggml import Tensor
from ._graph import GraphContext
from ._kv import recurrent_widths

__all__ = ["build_mamba"]


def _state(ctx: GraphContext, kind: str, il: int, width: int, rows: int) -> Tensor:
    key = f"cache_{kind}_l{il}"
    found = ctx.caches.get(key)
    if found is None:
        found = ctx.caches[key] = op.weight(key, "F32", (width, rows))
    return found


def _build_rs(
    ctx: GraphContext,
    s: Tensor,
    copy_main: Tensor,
    copy_extra: Tensor,
    width: int,
    n_seqs: int,
    get_rows: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    n_rs = s.ne[1]
    states = op.reshape(s, (width, s.ne[1]))
    zero = op.view_nd(states, (width,))
    ctx.gf.expand(op.scale_inplace(zero))
    output_states = get_rows(states, copy_main)
    ctx.gf.expand(output_states)
    extra = op.get_rows(states, copy_extra)
    target = op.view_nd(s, (width, n_rs - n_seqs), (s.nb[1],), n_seqs * s.nb[1])
    ctx.gf.expand(op.cpy(extra, target))
    return output_states


def _need(ctx: GraphContext, name: str) -> Tensor:
    found = ctx.w(name)
    assert found is not None, name
    return found


@dataclass(frozen=True)
class _Dims:
    d_conv: int
    d_inner: int
    d_state: int
    dt_rank: int
    width_r: int
    width_s: int
    n_seqs: int
    n_seq_tokens: int
    rows: int


def build_mamba(ctx: GraphContext) -> None:
    m = ctx.model
    width_r, width_s = recurrent_widths(m)
    n_seqs = ctx.shape.n_seqs
    dims = _Dims(
        d_conv=int(m.get("{arch}.ssm.conv_kernel", 0)),
        d_inner=int(m.get("{arch}.ssm.inner_size", 0)),
        d_state=int(m.get("{arch}.ssm.state_size", 0)),
        dt_rank=int(m.get("{arch}.ssm.time_step_rank", 0)),
        width_r=width_r,
        width_s=width_s,
        n_seqs=n_seqs,
        n_seq_tokens=ctx.n_tokens // n_seqs,
        rows=max(1, n_seqs),
    )
    tok_embd = _need(ctx, "token_embd.weight")
    inp_l = ctx.inp_embd(tok_embd)
    s_copy = op.input_tensor("rs_s_copy", "I32", (dims.rows,))
    copies = (
        op.view_nd(s_copy, (n_seqs,)),
        op.view_nd(s_copy, (dims.rows - n_seqs,), None, n_seqs * 4),
    )
    out_ids = ctx.inp_out_ids()
    for il in range(m.n_layer):
        cur = ctx.norm(inp_l, _need(ctx, f"blk.{il}.attn_norm.weight"), None, True)
        cur = _mamba_layer(ctx, il, cur, copies, dims)
        if il == m.n_layer - 1:
            cur = op.get_rows(cur, out_ids)
            inp_l = op.get_rows(inp_l, out_ids)
        inp_l = op.add(cur, inp_l)
    cur = ctx.norm(inp_l, ctx.w("output_norm.weight"), None, True)
    ctx.t_embd = cur
    cur = ctx.lora_mm(ctx.output_weight(tok_embd), cur)
    ctx.t_logits = cur
    ctx.gf.expand(cur)


def _mamba_layer(
    ctx: GraphContext, il: int, cur: Tensor, copies: tuple[Tensor, Tensor], d: _Dims
) -> Tensor:
    """llm_build_mamba_base::build_mamba_layer (Mamba-1)."""
    p = f"blk.{il}."
    n_seqs, n_tok = d.n_seqs, d.n_seq_tokens
    conv_all = _state(ctx, "r", il, d.width_r, d.rows)
    ssm_all = _state(ctx, "s", il, d.width_s, d.rows)
    conv = _build_rs(ctx, conv_all, *copies, d.width_r, n_seqs, op.get_rows)
    conv = op.reshape(conv, (d.d_conv - 1, d.d_inner, n_seqs))
    cur = op.reshape(cur, (cur.ne[0], n_tok, n_seqs))
    xz = ctx.lora_mm(_need(ctx, p + "ssm_in.weight"), cur)
    x = op.view_nd(xz, (d.d_inner, xz.ne[1], xz.ne[2]), (xz.nb[1], xz.nb[2]))
    z = op.view_nd(xz, (d.d_inner, xz.ne[1], xz.ne[2]), (xz.nb[1], xz.nb[2]), d.d_inner * 4)
    conv_x = op.concat(conv, op.transpose(x), 0)
    last = op.view_nd(
        conv_x, (d.d_conv - 1, d.d_inner, n_seqs), (conv_x.nb[1], conv_x.nb[2]),
        n_tok * conv_x.nb[0],
    )  # fmt: skip
    ctx.gf.expand(op.cpy(last, op.view_nd(conv_all, ((d.d_conv - 1) * d.d_inner * n_seqs,))))
    x = op.ssm_conv(conv_x, _need(ctx, p + "ssm_conv1d.weight"))
    x = op.unary(op.add(x, _need(ctx, p + "ssm_conv1d.bias")))
    x_db = ctx.lora_mm(_need(ctx, p + "ssm_x.weight"), x)
    dt = op.view_nd(x_db, (d.dt_rank, n_tok, n_seqs), (x_db.nb[1], x_db.nb[2]))
    bc_shape = (d.d_state, 1, n_tok, n_seqs)
    bc_strides = (d.d_state * 4, x_db.nb[1], x_db.nb[2])
    b = op.view_nd(x_db, bc_shape, bc_strides, 4 * d.dt_rank)
    c = op.view_nd(x_db, bc_shape, bc_strides, 4 * (d.dt_rank + d.d_state))
    dt = ctx.lora_mm(_need(ctx, p + "ssm_dt.weight"), op.cont(dt))
    dt = op.add(dt, _need(ctx, p + "ssm_dt.bias"))
    kept = x
    x = op.reshape(x, (1, d.d_inner, n_tok, n_seqs))
    scan = partial(_scan, x=x, dt=dt, a=_need(ctx, p + "ssm_a"), b=b, c=c, d=d)
    y_ssm = _build_rs(ctx, ssm_all, *copies, d.width_s, n_seqs, scan)
    n_state = d.d_state * d.d_inner * n_seqs
    tail = op.view_nd(y_ssm, (n_state,), None, x.nb[3] * x.ne[3])
    ctx.gf.expand(op.cpy(tail, op.view_nd(ssm_all, (n_state,))))
    y = op.view_nd(y_ssm, (d.d_inner, n_tok, n_seqs), (x.nb[2], x.nb[3]))
    y = op.add(y, op.mul(kept, _need(ctx, p + "ssm_d")))
    y = op.glu(op.cont(z), y)
    cur = ctx.lora_mm(_need(ctx, p + "ssm_out.weight"), y)
    return op.reshape(cur, (cur.ne[0], n_tok * n_seqs))


def _scan(
    states: Tensor, ids: Tensor, *, x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, d: _Dims
) -> Tensor:
    ssm = op.reshape(states, (d.d_state, 1, d.d_inner, d.rows))
    return op.ssm_scan(ssm, x, dt, a, b, c, ids)
