"""The building blocks llama.cpp assembles every model's compute graph from (llama-graph.cpp),
replayed on symbolic tensors: inputs, norms, Q/K/V projections, attention over the KV cache or
over the batch, feed-forward and mixture-of-experts blocks.

Each helper adds the same ops, with the same sources in the same order, as its namesake in
llama-graph.cpp, and calls ``expand`` wherever llama.cpp calls ``ggml_build_forward_expand``:
both decide the node order, and the node order decides the allocator's result.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _ops as op
from ._ggml import Graph, Tensor, row_size
from ._model import ModelInfo

__all__ = ["GraphContext", "Shape"]


@dataclass(frozen=True)
class Shape:
    """One graph reservation: the ubatch and the context it runs against."""

    n_tokens: int
    n_seqs: int
    n_outputs: int
    n_kv: int  # cells the base KV cache exposes (llama_kv_cache::get_n_kv at init_full)
    n_kv_swa: int  # the same for the sliding-window cache
    kv_size: int  # cells the base cache holds per stream
    kv_size_swa: int
    n_stream: int  # KV streams: 1 if unified, else one per sequence
    flash_attn: bool
    type_k: str
    type_v: str
    embeddings: bool
    pooling: int  # llama_pooling_type in effect


class GraphContext:
    """llm_graph_context for one model and one reservation."""

    def __init__(self, model: ModelInfo, shape: Shape, *, separate_output: bool = False) -> None:
        self.model = model
        # a tied LM head offloaded to a GPU is a second tensor there (TENSOR_DUPLICATED)
        self.separate_output = separate_output
        self.shape = shape
        self.gf = Graph()
        self.n_tokens = shape.n_tokens
        self.v_trans = not shape.flash_attn
        self.weights: dict[str, Tensor] = {}
        self.caches: dict[str, Tensor] = {}
        self.t_embd: Tensor | None = None
        self.t_logits: Tensor | None = None
        self.t_embd_pooled: Tensor | None = None
        # each KV cache (base, sliding-window) has its own rotation inputs
        self.k_rot = self._rot_k()
        self.v_rot = self._rot_v()
        self.k_rot_swa = self._rot_k() if any(model.is_swa) else None
        self.v_rot_swa = self._rot_v() if any(model.is_swa) else None

    # --- weights and caches ------------------------------------------------------------------

    def w(self, name: str) -> Tensor | None:
        """The model tensor ``name`` (None where the file has none), one object per name."""
        found = self.weights.get(name)
        if found is None:
            ref = self.model.tensors.get(name)
            if ref is None:
                return None
            shape = ref.shape + (1,) * (4 - len(ref.shape))
            found = self.weights[name] = op.weight(name, ref.type, shape)
        return found

    def output_weight(self, tok_embd: Tensor) -> Tensor:
        found = self.w("output.weight")
        if found is not None:
            return found
        if not self.separate_output:
            return tok_embd
        found = self.weights["output.weight"] = op.weight(
            "output.weight", tok_embd.type, tok_embd.ne
        )
        return found

    def cache(self, kind: str, il: int, swa: bool) -> Tensor:
        key = f"cache_{kind}_l{il}"
        found = self.caches.get(key)
        if found is None:
            m, s = self.model, self.shape
            size = s.kv_size_swa if swa else s.kv_size
            if kind == "k":
                found = op.weight(key, s.type_k, (m.n_embd_k_gqa(il), size, s.n_stream))
            else:
                width = m.n_embd_v_gqa(il) if not self.v_trans else self._v_gqa_max()
                found = op.weight(key, s.type_v, (width, size, s.n_stream))
            self.caches[key] = found
        return found

    def _v_gqa_max(self) -> int:
        m = self.model
        return max((m.n_embd_v_gqa(il) for il in range(m.n_layer)), default=0)

    def _uniform_head(self, dims: list[int]) -> int:
        return dims[0] if dims and all(d == dims[0] for d in dims) else -1

    def _rot_k(self) -> Tensor | None:
        m, s = self.model, self.shape
        if m.recurrent or m.encoder or not _quantized(s.type_k):
            return None
        head_all = self._uniform_head([m.head_dim_k(il) for il in range(m.n_layer)])
        if head_all <= 0 or m.head_k % 64:
            return None
        nrot = 64
        while head_all % (nrot * 2) == 0:
            nrot *= 2
        return op.input_tensor("attn_inp_k_rot", "F32", (nrot, nrot))

    def _rot_v(self) -> Tensor | None:
        m, s = self.model, self.shape
        if m.recurrent or m.encoder or not _quantized(s.type_v):
            return None
        head_all = self._uniform_head([m.head_dim_v(il) for il in range(m.n_layer)])
        if head_all <= 0 or m.head_v % 64:
            return None
        return op.input_tensor("attn_inp_v_rot", "F32", (64, 64))

    # --- inputs ------------------------------------------------------------------------------

    def inp_embd(self, tok_embd: Tensor) -> Tensor:
        tokens = op.input_tensor("inp_tokens", "I32", (self.n_tokens,))
        embd = op.input_tensor("inp_embd", "F32", (self.model.n_embd, self.n_tokens))
        cur = op.get_rows(tok_embd, tokens)
        self.gf.expand(cur)
        self.gf.expand(embd)  # the vector-embeddings path is in the graph, never computed
        return self.gf.expand(cur)

    def inp_pos(self) -> Tensor:
        return op.input_tensor("inp_pos", "I32", (self.n_tokens * self._n_pos_per_embd(),))

    def _n_pos_per_embd(self) -> int:
        sections = self.model.get("{arch}.rope.dimension_sections")
        return 4 if sections is not None else 1

    def inp_out_ids(self) -> Tensor:
        return op.input_tensor("out_ids", "I32", (self.shape.n_outputs,))

    def kq_mask(self, n_kv: int) -> Tensor:
        s = self.shape
        kind = "F16" if s.flash_attn else "F32"
        n_stream = s.n_stream
        return op.input_tensor(
            "attn_inp_kq_mask", kind, (n_kv, self.n_tokens // n_stream, 1, n_stream)
        )

    def kv_inputs(self, swa: bool) -> tuple[Tensor, Tensor, Tensor]:
        """k_idxs, v_idxs and the KQ mask of one cache (build_attn_inp_kv[_iswa])."""
        k_idxs = op.input_tensor("attn_inp_k_idxs", "I64", (self.n_tokens,))
        width = self._v_gqa_max() if self.v_trans else 1
        v_idxs = op.input_tensor("attn_inp_v_idxs", "I64", (self.n_tokens * width,))
        mask = self.kq_mask(self.shape.n_kv_swa if swa else self.shape.n_kv)
        return k_idxs, v_idxs, mask

    # --- blocks ------------------------------------------------------------------------------

    def lora_mm(self, w: Tensor, cur: Tensor) -> Tensor:
        return op.mul_mat(w, cur)

    def norm(self, cur: Tensor, mw: Tensor | None, mb: Tensor | None, rms: bool) -> Tensor:
        cur = op.rms_norm(cur) if rms else op.norm(cur)
        if mw is not None:
            cur = op.mul(cur, mw)
        if mb is not None:
            cur = op.add(cur, mb)
        return cur

    def qkv(
        self, il: int, cur: Tensor, n_head: int, n_head_kv: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        hk, hv = m.head_dim_k(il), m.head_dim_v(il)
        p = f"blk.{il}."
        wqkv = self.w(p + "attn_qkv.weight")
        if wqkv is not None:
            qkv = self.lora_mm(wqkv, cur)
            bias = self.w(p + "attn_qkv.bias")
            if bias is not None:
                qkv = op.add(qkv, bias)
            nq = hk * n_head
            nk = hk * n_head_kv
            q = op.view_nd(qkv, (hk, n_head, self.n_tokens), (row_size(qkv.type, hk), qkv.nb[1]))
            k = op.view_nd(
                qkv, (hk, n_head_kv, self.n_tokens), (row_size(qkv.type, hk), qkv.nb[1]),
                row_size(qkv.type, nq),
            )  # fmt: skip
            v = op.view_nd(
                qkv, (hv, n_head_kv, self.n_tokens), (row_size(qkv.type, hv), qkv.nb[1]),
                row_size(qkv.type, nq + nk),
            )  # fmt: skip
            return q, k, v
        outs: list[Tensor] = []
        for name in ("q", "k", "v"):
            weight = self.w(f"{p}attn_{name}.weight")
            assert weight is not None, f"{p}attn_{name}.weight"
            t = self.lora_mm(weight, cur)
            bias = self.w(f"{p}attn_{name}.bias")
            if bias is not None:
                t = op.add(t, bias)
            outs.append(t)
        return (
            op.reshape(outs[0], (hk, n_head, self.n_tokens)),
            op.reshape(outs[1], (hk, n_head_kv, self.n_tokens)),
            op.reshape(outs[2], (hv, n_head_kv, self.n_tokens)),
        )

    # --- outputs -----------------------------------------------------------------------------

    def pooling(self) -> None:
        """build_pooling: only when the context computes embeddings."""
        s = self.shape
        if not s.embeddings or self.t_embd is None:
            return
        inp = self.t_embd
        if s.pooling == 1:  # mean
            mean = op.input_tensor("mean", "F32", (self.n_tokens, s.n_seqs))
            cur = op.mul_mat(op.cont(op.transpose(inp)), mean)
        elif s.pooling in (2, 3):  # cls, last
            cls = op.input_tensor("cls", "I32", (s.n_seqs,))
            cur = op.get_rows(inp, cls)
        else:
            cur = inp
        self.t_embd_pooled = cur
        self.gf.expand(cur)

    def finish(self) -> Graph:
        """Pooling, then llm_graph_result::set_outputs, as llama_model::build_graph does."""
        self.pooling()
        for t in (self.t_logits, self.t_embd, self.t_embd_pooled):
            if t is not None:
                t.is_output = True
        return self.gf


def _quantized(type_name: str) -> bool:
    return type_name.upper() not in {"F32", "F16", "BF16"}
