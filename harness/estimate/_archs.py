"""Per-architecture compute graphs (llama.cpp src/models/*.cpp) on top of ``_graph``.

Verified against llama.cpp's own compute buffer sizes: llama (dense and mixture-of-experts),
qwen2, qwen3, gemma3 (with sliding-window layers), bert, mamba. Other decoder-only transformers
are built with the same decoder, its optional parts switched on by the tensors the file has
(biases, Q/K norms, post-norms, experts); their result is marked approximate.
"""

from __future__ import annotations

from collections.abc import Callable

from . import _ops as op
from ._attention import attn_kv, attn_mha, attn_out
from ._ffn import ffn, moe_ffn
from ._ggml import Graph
from ._graph import GraphContext
from ._recurrent import build_mamba

__all__ = ["EXACT_ARCHS", "build_graph"]

_GELU_ARCHS = frozenset({"gemma", "gemma2", "gemma3", "gemma-embedding"})
_EMBD_SCALE_ARCHS = frozenset({"gemma", "gemma2", "gemma3", "gemma-embedding"})
_SOFTCAP_ARCHS = frozenset({"gemma2"})
_Q_SCALE_ARCHS = frozenset({"gemma3", "gemma-embedding"})
_NORM_W_ARCHS = frozenset({"llama", "qwen3moe", "mixtral"})

EXACT_ARCHS = frozenset({"llama", "qwen2", "qwen3", "gemma3", "bert", "mamba"})


def build_graph(ctx: GraphContext) -> Graph:
    arch = ctx.model.arch
    builder: Callable[[GraphContext], None]
    if arch in {"bert", "nomic-bert", "jina-bert-v2", "jina-bert-v3"}:
        builder = _bert
    elif arch == "mamba":
        builder = build_mamba
    else:
        builder = _decoder
    builder(ctx)
    return ctx.finish()


def _decoder(ctx: GraphContext) -> None:
    """llama.cpp's llama graph and its relatives (qwen2/3, mistral, gemma3, granite, ...)."""
    m = ctx.model
    arch = m.arch
    tok_embd = ctx.w("token_embd.weight")
    assert tok_embd is not None, "token_embd.weight"
    inp_l = ctx.inp_embd(tok_embd)
    if arch in _EMBD_SCALE_ARCHS:
        inp_l = op.scale(inp_l)
    inp_pos = ctx.inp_pos()
    iswa = any(m.is_swa)
    base_inputs = ctx.kv_inputs(swa=False)
    swa_inputs = ctx.kv_inputs(swa=True) if iswa else base_inputs
    out_ids = ctx.inp_out_ids()
    rope_factors = ctx.w("rope_freqs.weight")
    act = "gelu" if arch in _GELU_ARCHS else "silu"
    for il in range(m.n_layer):
        p = f"blk.{il}."
        inp_sa = inp_l
        cur = ctx.norm(inp_l, ctx.w(p + "attn_norm.weight"), ctx.w(p + "attn_norm.bias"), True)
        q, k, v = ctx.qkv(il, cur, m.n_head[il], m.n_head_kv[il])
        q_norm, k_norm = ctx.w(p + "attn_q_norm.weight"), ctx.w(p + "attn_k_norm.weight")
        if q_norm is not None:
            q = ctx.norm(q, q_norm, None, True)
        q = op.rope(q, inp_pos, rope_factors)
        if k_norm is not None:
            k = ctx.norm(k, k_norm, None, True)
        k = op.rope(k, inp_pos, rope_factors)
        if arch in _Q_SCALE_ARCHS:
            q = op.scale(q)
        swa = m.is_swa[il]
        cur = attn_kv(
            ctx,
            il, swa_inputs if swa else base_inputs, q, k, v,
            swa=swa, iswa_order=iswa, softcap=arch in _SOFTCAP_ARCHS,
        )  # fmt: skip
        if il == m.n_layer - 1:
            cur = op.get_rows(cur, out_ids)
            inp_sa = op.get_rows(inp_sa, out_ids)
        post_attn = ctx.w(p + "post_attention_norm.weight")
        if post_attn is not None:
            cur = ctx.norm(cur, post_attn, None, True)
        ffn_inp = op.add(cur, inp_sa)
        cur = ctx.norm(ffn_inp, ctx.w(p + "ffn_norm.weight"), ctx.w(p + "ffn_norm.bias"), True)
        if ctx.w(p + "ffn_gate_inp.weight") is not None:
            cur = moe_ffn(ctx, il, cur, arch in _NORM_W_ARCHS, m.n_expert_used)
        else:
            cur = ffn(ctx, il, cur, act, parallel=True)
        post_ffw = ctx.w(p + "post_ffw_norm.weight")
        if post_ffw is not None:
            cur = ctx.norm(cur, post_ffw, None, True)
        inp_l = op.add(cur, ffn_inp)
    cur = ctx.norm(inp_l, ctx.w("output_norm.weight"), ctx.w("output_norm.bias"), True)
    ctx.t_embd = cur
    output = ctx.output_weight(tok_embd)
    cur = ctx.lora_mm(output, cur)
    output_b = ctx.w("output.bias")
    if output_b is not None:
        cur = op.add(cur, output_b)
    if m.get("{arch}.final_logit_softcapping"):
        cur = op.scale(op.unary(op.scale(cur)))
    ctx.t_logits = cur
    ctx.gf.expand(cur)


def _bert(ctx: GraphContext) -> None:
    """llama.cpp's bert graph: learned positions, LayerNorm, no KV cache, GELU FFN."""
    m = ctx.model
    inp_pos = ctx.inp_pos()
    tok_embd = ctx.w("token_embd.weight")
    assert tok_embd is not None, "token_embd.weight"
    inp_l = ctx.inp_embd(tok_embd)
    types = ctx.w("token_types.weight")
    if types is not None:
        inp_l = op.add(inp_l, op.view_nd(types, (m.n_embd,)))
    pos_embd = ctx.w("position_embd.weight")
    if pos_embd is not None and m.arch == "bert":
        inp_l = op.add(op.get_rows(pos_embd, inp_pos), inp_l)
    inp_l = ctx.norm(inp_l, ctx.w("token_embd_norm.weight"), ctx.w("token_embd_norm.bias"), False)
    n = ctx.n_tokens
    mask_type = "F16" if ctx.shape.flash_attn else "F32"
    mask = op.input_tensor("attn_inp_kq_mask", mask_type, (n, n, 1, 1))
    out_ids = ctx.inp_out_ids()
    for il in range(m.n_layer):
        p = f"blk.{il}."
        q, k, v = ctx.qkv(il, inp_l, m.n_head[il], m.n_head_kv[il])
        for t in (q, k, v):
            ctx.gf.expand(t)
        cur = attn_out(ctx, il, attn_mha(ctx, q, k, v, mask))
        if il == m.n_layer - 1:
            cur = op.get_rows(cur, out_ids)
            inp_l = op.get_rows(inp_l, out_ids)
        cur = op.add(cur, inp_l)
        cur = ctx.norm(
            cur, ctx.w(p + "attn_output_norm.weight"), ctx.w(p + "attn_output_norm.bias"), False
        )
        ffn_inp = cur
        cur = ffn(ctx, il, cur, "gelu", parallel=False)
        cur = op.add(cur, ffn_inp)
        inp_l = ctx.norm(
            cur, ctx.w(p + "layer_output_norm.weight"), ctx.w(p + "layer_output_norm.bias"), False
        )
    ctx.t_embd = inp_l
    ctx.gf.expand(inp_l)
