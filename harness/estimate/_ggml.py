"""A symbolic stand-in for ggml: tensors with shapes, strides and sources, but no data.

Only what decides memory is modelled: element types and their byte sizes, the shapes each op
produces, which ops are views (they never own memory), and the order in which
``ggml_build_forward_expand`` puts nodes and leafs into a graph (a depth-first walk over the
sources, left to right). The allocator in ``_alloc`` replays ggml-alloc over such a graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.gguf import GGML_QUANT_SIZES, GGMLQuantizationType

__all__ = [
    "CAN_INPLACE",
    "Graph",
    "Tensor",
    "block_size",
    "nbytes",
    "row_size",
    "type_size",
]

# Element types that are not weight types in gguf's table.
_EXTRA_TYPES = {"I8": (1, 1), "I16": (1, 2), "I32": (1, 4), "I64": (1, 8)}
# ggml_op_can_inplace (ggml-alloc.c): the ops whose result may take over a dying source's memory.
CAN_INPLACE = frozenset(
    {
        "FILL", "SCALE", "DIAG_MASK_ZERO", "DIAG_MASK_INF", "ADD", "ADD_ID", "ADD1", "SUB",
        "MUL", "DIV", "SQR", "SQRT", "LOG", "UNARY", "ROPE", "ROPE_BACK", "SILU_BACK",
        "RMS_NORM", "RMS_NORM_BACK", "CLAMP", "SOFT_MAX", "SOFT_MAX_BACK",
    }
)  # fmt: skip
_VIEW_OPS = frozenset({"VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE"})


def _sizes(type_name: str) -> tuple[int, int]:
    name = type_name.upper()
    if name in _EXTRA_TYPES:
        return _EXTRA_TYPES[name]
    return GGML_QUANT_SIZES[GGMLQuantizationType[name]]


def block_size(type_name: str) -> int:
    return _sizes(type_name)[0]


def type_size(type_name: str) -> int:
    return _sizes(type_name)[1]


def row_size(type_name: str, n: int) -> int:
    """ggml_row_size: bytes of ``n`` consecutive elements of one row."""
    block, size = _sizes(type_name)
    return n // block * size


def _contiguous_strides(type_name: str, ne: Sequence[int]) -> tuple[int, int, int, int]:
    block, size = _sizes(type_name)
    nb0 = size
    nb1 = nb0 * (ne[0] // block)
    nb2 = nb1 * ne[1]
    nb3 = nb2 * ne[2]
    return (nb0, nb1, nb2, nb3)


def nbytes(type_name: str, ne: Sequence[int], nb: Sequence[int]) -> int:
    """ggml_nbytes: the span a tensor's elements cover, honouring its strides."""
    if any(n <= 0 for n in ne):
        return 0
    block, size = _sizes(type_name)
    if block == 1:
        total = size
        for i in range(4):
            total += (ne[i] - 1) * nb[i]
        return total
    total = ne[0] * nb[0] // block
    for i in range(1, 4):
        total += (ne[i] - 1) * nb[i]
    return total


@dataclass(eq=False)
class Tensor:
    """One ggml tensor. Identity matters (graphs hash tensors), so equality is identity."""

    op: str
    type: str
    ne: tuple[int, int, int, int]
    nb: tuple[int, int, int, int]
    src: tuple[Tensor | None, ...] = ()
    view_src: Tensor | None = None  # always the root tensor that owns the memory
    view_offs: int = 0
    external: bool = False  # memory lives outside the compute buffer (weights, KV cache)
    name: str = ""
    is_input: bool = False
    is_output: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def is_view(self) -> bool:
        return self.view_src is not None

    @property
    def has_data(self) -> bool:
        """Whether ggml would see a data pointer or buffer already set (never allocated here)."""
        root = self.view_src if self.view_src is not None else self
        return root.external

    @property
    def size(self) -> int:
        return nbytes(self.type, self.ne, self.nb)

    def n_elements(self) -> int:
        return self.ne[0] * self.ne[1] * self.ne[2] * self.ne[3]

    def is_contiguous(self) -> bool:
        return self.nb == _contiguous_strides(self.type, self.ne)

    def same_layout(self, other: Tensor) -> bool:
        return self.type == other.type and self.ne == other.ne and self.nb == other.nb


def new(
    type_name: str,
    ne: Sequence[int],
    op: str = "NONE",
    src: Sequence[Tensor | None] = (),
    name: str = "",
    external: bool = False,
) -> Tensor:
    shape = tuple(ne) + (1,) * (4 - len(ne))
    dims = (shape[0], shape[1], shape[2], shape[3])
    return Tensor(
        op=op,
        type=type_name,
        ne=dims,
        nb=_contiguous_strides(type_name, dims),
        src=tuple(src),
        name=name,
        external=external,
    )


def view(
    a: Tensor,
    ne: Sequence[int],
    nb: Sequence[int] | None = None,
    offset: int = 0,
    op: str = "VIEW",
    src: Sequence[Tensor | None] | None = None,
    type_name: str | None = None,
) -> Tensor:
    """A tensor sharing ``a``'s memory, as ggml_new_tensor_impl does for a view_src."""
    root = a.view_src if a.view_src is not None else a
    offs = offset + (a.view_offs if a.view_src is not None else 0)
    shape = tuple(ne) + (1,) * (4 - len(ne))
    dims = (shape[0], shape[1], shape[2], shape[3])
    kind = type_name or a.type
    strides = _contiguous_strides(kind, dims)
    if nb is not None:
        given = tuple(nb)
        # like ggml_view_Nd: nb[0] is the type size, the rest are given, the tail is derived
        full = [strides[0], *given[: len(dims) - 1]]
        while len(full) < 4:
            full.append(full[-1] * dims[len(full) - 1])
        strides = (full[0], full[1], full[2], full[3])
    return Tensor(
        op=op,
        type=kind,
        ne=dims,
        nb=strides,
        src=tuple(src) if src is not None else (a,),
        view_src=root,
        view_offs=offs,
    )


class Graph:
    """A ggml_cgraph being built: nodes and leafs in the order ggml_visit_parents adds them."""

    def __init__(self) -> None:
        self.nodes: list[Tensor] = []
        self.leafs: list[Tensor] = []
        self._seen: set[int] = set()

    def expand(self, tensor: Tensor) -> Tensor:
        # iterative post-order walk: sources left to right, then the tensor itself
        stack: list[tuple[Tensor, int]] = [(tensor, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                if id(node) in self._seen:
                    continue
                self._seen.add(id(node))
            if index < len(node.src):
                stack.append((node, index + 1))
                child = node.src[index]
                if child is not None and id(child) not in self._seen:
                    stack.append((child, 0))
                continue
            if node.op == "NONE":
                self.leafs.append(node)
            else:
                self.nodes.append(node)
        return tensor


def is_view_op(op: str) -> bool:
    return op in _VIEW_OPS
