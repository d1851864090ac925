"""The ggml operations llama.cpp's graphs use, reduced to the shapes and types they produce.

Each function mirrors the ggml function of the same name: same sources in the same order (the
order decides how a graph is walked and which source an in-place op may take over), same result
type and shape, and a view where ggml makes a view.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._ggml import Tensor, new, view

__all__ = [
    "add",
    "argsort_top_k",
    "cast",
    "concat",
    "cont",
    "cont_nd",
    "cpy",
    "fill",
    "flash_attn_ext",
    "get_rows",
    "glu",
    "input_tensor",
    "mul",
    "mul_mat",
    "mul_mat_id",
    "norm",
    "op_like",
    "pad",
    "permute",
    "reshape",
    "rms_norm",
    "rope",
    "scale",
    "scale_inplace",
    "set_rows",
    "soft_max",
    "ssm_conv",
    "ssm_scan",
    "sum_rows",
    "transpose",
    "unary",
    "view_nd",
    "view_tensor",
    "weight",
]


def weight(name: str, type_name: str, ne: Sequence[int]) -> Tensor:
    """A model weight or cache tensor: its memory is not the compute buffer's."""
    return new(type_name, ne, name=name, external=True)


def input_tensor(name: str, type_name: str, ne: Sequence[int]) -> Tensor:
    t = new(type_name, ne, name=name)
    t.is_input = True
    return t


def op_like(op: str, a: Tensor, *src: Tensor | None, type_name: str | None = None) -> Tensor:
    """ggml_dup_tensor(a) as the result of ``op``: same shape, contiguous."""
    return new(type_name or a.type, a.ne, op=op, src=(a, *src))


# --- element-wise and normalisation ----------------------------------------------------------


def add(a: Tensor, b: Tensor) -> Tensor:
    return op_like("ADD", a, b)


def mul(a: Tensor, b: Tensor) -> Tensor:
    return op_like("MUL", a, b)


def scale(a: Tensor) -> Tensor:
    return op_like("SCALE", a)


def unary(a: Tensor) -> Tensor:
    """silu, gelu, tanh, sigmoid, relu...: all GGML_OP_UNARY."""
    return op_like("UNARY", a)


def fill(a: Tensor) -> Tensor:
    return op_like("FILL", a)


def rms_norm(a: Tensor) -> Tensor:
    return op_like("RMS_NORM", a)


def norm(a: Tensor) -> Tensor:
    return op_like("NORM", a)


def rope(a: Tensor, pos: Tensor, factors: Tensor | None = None) -> Tensor:
    return op_like("ROPE", a, pos, factors)


def soft_max(a: Tensor, mask: Tensor | None = None, sinks: Tensor | None = None) -> Tensor:
    return op_like("SOFT_MAX", a, mask, sinks)


def glu(a: Tensor, b: Tensor | None) -> Tensor:
    """ggml_swiglu_split / geglu_split (with ``b``) or the fused halves form (without)."""
    if b is not None:
        return new(a.type, a.ne, op="GLU", src=(a, b))
    return new(a.type, (a.ne[0] // 2, *a.ne[1:]), op="GLU", src=(a, None))


def sum_rows(a: Tensor) -> Tensor:
    return new(a.type, (1, *a.ne[1:]), op="SUM_ROWS", src=(a,))


# --- matrix products and lookups -------------------------------------------------------------


def mul_mat(a: Tensor, b: Tensor) -> Tensor:
    return new("F32", (a.ne[1], b.ne[1], b.ne[2], b.ne[3]), op="MUL_MAT", src=(a, b))


def mul_mat_id(a: Tensor, b: Tensor, ids: Tensor) -> Tensor:
    return new("F32", (a.ne[1], ids.ne[0], b.ne[2], 1), op="MUL_MAT_ID", src=(a, b, ids))


def get_rows(a: Tensor, b: Tensor) -> Tensor:
    kind = "I32" if a.type == "I32" else "F32"
    return new(kind, (a.ne[0], b.ne[0], b.ne[1], b.ne[2]), op="GET_ROWS", src=(a, b))


def set_rows(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    # the result is a view of the destination; note the legacy source order b, c, a
    return view(a, a.ne, a.nb[1:], op="SET_ROWS", src=(b, c, a))


def argsort_top_k(a: Tensor, k: int) -> Tensor:
    sorted_ids = new("I32", a.ne, op="ARGSORT", src=(a,))
    return view_nd(sorted_ids, (k, *a.ne[1:]), sorted_ids.nb[1:])


def flash_attn_ext(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, sinks: Tensor | None = None
) -> Tensor:
    ne = (v.ne[0], q.ne[2], q.ne[1], q.ne[3])
    return new("F32", ne, op="FLASH_ATTN_EXT", src=(q, k, v, mask, sinks))


# --- copies ----------------------------------------------------------------------------------


def cont(a: Tensor) -> Tensor:
    return new(a.type, a.ne, op="CONT", src=(a,))


def cont_nd(a: Tensor, ne: Sequence[int]) -> Tensor:
    return new(a.type, ne, op="CONT", src=(a,))


def cast(a: Tensor, type_name: str) -> Tensor:
    result = new(type_name, a.ne, op="CPY")
    result.src = (a, result)  # ggml_cast makes the result its own second source
    return result


def concat(a: Tensor, b: Tensor, dim: int) -> Tensor:
    ne = list(a.ne)
    ne[dim] += b.ne[dim]
    return new(a.type, ne, op="CONCAT", src=(a, b))


def pad(a: Tensor, p0: int) -> Tensor:
    return new(a.type, (a.ne[0] + p0, *a.ne[1:]), op="PAD", src=(a,))


# --- views -----------------------------------------------------------------------------------


def reshape(a: Tensor, ne: Sequence[int]) -> Tensor:
    return view(a, ne, op="RESHAPE")


def view_nd(
    a: Tensor, ne: Sequence[int], nb: Sequence[int] | None = None, offset: int = 0
) -> Tensor:
    return view(a, ne, nb if nb is not None else None, offset, op="VIEW")


def view_tensor(a: Tensor) -> Tensor:
    return view(a, a.ne, a.nb[1:], op="VIEW")


def permute(a: Tensor, axes: Sequence[int]) -> Tensor:
    ne = [0, 0, 0, 0]
    nb = [0, 0, 0, 0]
    for i, axis in enumerate(axes):
        ne[axis] = a.ne[i]
        nb[axis] = a.nb[i]
    result = view(a, ne, op="PERMUTE")
    result.nb = (nb[0], nb[1], nb[2], nb[3])
    return result


def transpose(a: Tensor) -> Tensor:
    result = view(a, (a.ne[1], a.ne[0], a.ne[2], a.ne[3]), op="TRANSPOSE")
    result.nb = (a.nb[1], a.nb[0], a.nb[2], a.nb[3])
    return result


# --- in-place results and state-space ops ----------------------------------------------------


def cpy(a: Tensor, b: Tensor) -> Tensor:
    """ggml_cpy: the result is a view of the destination ``b``."""
    return view(b, b.ne, b.nb[1:], op="CPY", src=(a, b))


def scale_inplace(a: Tensor) -> Tensor:
    return view(a, a.ne, a.nb[1:], op="SCALE", src=(a,))


def ssm_conv(sx: Tensor, c: Tensor) -> Tensor:
    n_t = sx.ne[0] - c.ne[0] + 1
    return new("F32", (c.ne[1], n_t, sx.ne[2]), op="SSM_CONV", src=(sx, c))


def ssm_scan(
    s: Tensor, x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, ids: Tensor
) -> Tensor:
    # the output y followed by the final states of the scanned sequences, flattened
    n = x.n_elements() + s.ne[0] * s.ne[1] * s.ne[2] * ids.ne[0]
    return new("F32", (n,), op="SSM_SCAN", src=(s, x, dt, a, b, c, ids))
