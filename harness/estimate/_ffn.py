"""Feed-forward blocks (llama-graph.cpp ``build_ffn`` and ``build_moe_ffn``)."""

from __future__ import annotations

from . import _ops as op
from ._ggml import Tensor
from ._graph import GraphContext

__all__ = ["ffn", "moe_ffn"]


def ffn(ctx: GraphContext, il: int, cur: Tensor, act: str, parallel: bool) -> Tensor:
    """build_ffn with up/gate/down (and their biases) of layer ``il``; act "silu"/"gelu"."""
    p = f"blk.{il}."
    up, gate, down = (ctx.w(f"{p}ffn_{n}.weight") for n in ("up", "gate", "down"))
    up_b, gate_b, down_b = (ctx.w(f"{p}ffn_{n}.bias") for n in ("up", "gate", "down"))
    tmp = ctx.lora_mm(up, cur) if up is not None else cur
    if up_b is not None:
        tmp = op.add(tmp, up_b)
    if gate is not None:
        cur = ctx.lora_mm(gate, tmp if not parallel else cur)
        if gate_b is not None:
            cur = op.add(cur, gate_b)
    else:
        cur = tmp
    # a parallel gate fuses activation and product (swiglu/geglu); otherwise silu/gelu alone
    cur = op.glu(cur, tmp) if gate is not None and parallel else op.unary(cur)
    if down is not None:
        cur = ctx.lora_mm(down, cur)
    if down_b is not None:
        cur = op.add(cur, down_b)
    return cur


def moe_ffn(ctx: GraphContext, il: int, cur: Tensor, norm_w: bool, n_expert_used: int) -> Tensor:
    """build_moe_ffn with softmax gating and a SiLU-gated expert FFN."""
    p = f"blk.{il}."
    gate_inp = ctx.w(p + "ffn_gate_inp.weight")
    up_exps = ctx.w(p + "ffn_up_exps.weight")
    gate_exps = ctx.w(p + "ffn_gate_exps.weight")
    down_exps = ctx.w(p + "ffn_down_exps.weight")
    assert gate_inp is not None and up_exps is not None and down_exps is not None
    n_embd, n_tokens = cur.ne[0], cur.ne[1]
    n_expert = gate_inp.ne[1]
    logits = ctx.lora_mm(gate_inp, cur)
    probs = op.soft_max(logits)
    selected = op.argsort_top_k(probs, n_expert_used)
    probs = op.reshape(probs, (1, n_expert, n_tokens))
    weights = op.get_rows(probs, selected)
    if norm_w:
        weights = op.reshape(weights, (n_expert_used, n_tokens))
        total = op.op_like("CLAMP", op.sum_rows(weights))
        weights = op.op_like("DIV", weights, total)
        weights = op.reshape(weights, (1, n_expert_used, n_tokens))
    ctx.gf.expand(weights)
    cur = op.reshape(cur, (n_embd, 1, n_tokens))
    up = op.mul_mat_id(up_exps, cur, selected)
    if gate_exps is not None:
        cur = op.mul_mat_id(gate_exps, cur, selected)
        cur = op.glu(cur, up)
    else:
        cur = op.unary(up)
    experts = op.mul_mat_id(down_exps, cur, selected)
    experts = op.mul(experts, weights)
    ctx.gf.expand(experts)
    views = []
    for i in range(n_expert_used):
        v = op.view_nd(experts, (n_embd, n_tokens), (experts.nb[2],), i * experts.nb[1])
        views.append(ctx.gf.expand(v))
    moe_out = views[0]
    for v in views[1:]:
        moe_out = ctx.gf.expand(op.add(moe_out, v))
    if n_expert_used == 1:
        moe_out = op.cont(moe_out)
    return moe_out
