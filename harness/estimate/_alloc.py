"""ggml-alloc's graph allocator (ggml_gallocr) replayed over a symbolic graph.

The size of a compute buffer is whatever this allocator's high-water mark comes to: tensors are
placed best-fit into free blocks (the block at the end of the buffer last), freed as soon as their
last consumer has run, and an in-place op takes over its source's block when that source dies
with it. Fragmentation is part of the result, so the algorithm is followed step by step
(ggml/src/ggml-alloc.c: ggml_dyn_tallocr_alloc/free_bytes, ggml_gallocr_alloc_graph_impl).
Only one chunk is modelled: no backend here caps a buffer below what a graph needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ._ggml import CAN_INPLACE, Graph, Tensor

__all__ = ["Backend", "allocate"]

_MAX_SIZE = 1 << 62


@dataclass(frozen=True)
class Backend:
    """A buffer type as the allocator sees it."""

    name: str
    alignment: int
    alloc_size: Callable[[Tensor], int]  # ggml_backend_buft_get_alloc_size


def _pad(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


class _Heap:
    """ggml_dyn_tallocr with a single chunk: free blocks sorted by offset, the last one endless."""

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment
        self.blocks: list[list[int]] = [[0, _MAX_SIZE]]
        self.max_size = 0

    def alloc(self, size: int) -> int:
        size = _pad(size, self.alignment)
        best = -1
        best_size = _MAX_SIZE
        for i in range(len(self.blocks) - 1):
            block_size = self.blocks[i][1]
            if block_size >= size and block_size <= best_size:
                best, best_size = i, block_size
        if best == -1:
            best = len(self.blocks) - 1
        block = self.blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.blocks[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        size = _pad(size, self.alignment)
        blocks = self.blocks
        for i, block in enumerate(blocks):
            if block[0] + block[1] == offset:
                block[1] += size
                if i < len(blocks) - 1 and block[0] + block[1] == blocks[i + 1][0]:
                    block[1] += blocks[i + 1][1]
                    del blocks[i + 1]
                return
            if offset + size == block[0]:
                block[0] = offset
                block[1] += size
                if i > 0 and blocks[i - 1][0] + blocks[i - 1][1] == block[0]:
                    blocks[i - 1][1] += block[1]
                    del blocks[i]
                return
        position = 0
        while position < len(blocks) and blocks[position][0] < offset:
            position += 1
        blocks.insert(position, [offset, size])


class _State:
    __slots__ = ("allocated", "backend", "n_children", "n_views", "offset")

    def __init__(self) -> None:
        self.n_children = 0
        self.n_views = 0
        self.allocated = False
        self.offset = 0
        self.backend = -1


def allocate(
    graph: Graph,
    backends: Sequence[Backend],
    assignment: Mapping[int, int] | None = None,
    default: int = 0,
) -> list[int]:
    """Peak bytes per backend buffer for one graph, as ggml_gallocr_reserve_n computes them.

    ``assignment`` maps a tensor's id to the backend that computes it (the scheduler's
    node and leaf backend ids); a tensor it does not name goes to ``default``.
    """
    heaps = [_Heap(b.alignment) for b in backends]
    states: dict[int, _State] = {}
    chosen = assignment or {}

    def which(t: Tensor) -> int:
        return chosen.get(id(t), default)

    def state(t: Tensor) -> _State:
        s = states.get(id(t))
        if s is None:
            s = states[id(t)] = _State()
        return s

    def is_own(t: Tensor) -> bool:
        return state(t).allocated

    def allocate_node(node: Tensor, backend_id: int) -> None:
        hn = state(node)
        if node.has_data or hn.allocated or node.is_view:
            return
        hn.allocated = True
        if node.op in CAN_INPLACE:
            for parent in node.src:
                if parent is None or not is_own(parent):
                    continue
                if parent.is_output or not node.same_layout(parent):
                    continue
                p_hn = state(parent)
                # a view parent is never "own", so only plain parents are taken over
                if p_hn.n_children == 1 and p_hn.n_views == 0:
                    hn.backend = p_hn.backend
                    hn.offset = p_hn.offset
                    p_hn.allocated = False
                    _free_extra(node, parent, hn, p_hn)
                    return
        backend = backends[backend_id]
        hn.backend = backend_id
        hn.offset = heaps[backend_id].alloc(backend.alloc_size(node))

    def _free_extra(node: Tensor, parent: Tensor, hn: _State, p_hn: _State) -> None:
        heap = heaps[p_hn.backend]
        parent_size = _pad(backends[p_hn.backend].alloc_size(parent), heap.alignment)
        node_size = _pad(backends[hn.backend].alloc_size(node), heap.alignment)
        if parent_size > node_size:
            heap.free(p_hn.offset + node_size, parent_size - node_size)

    def free_node(node: Tensor) -> None:
        if node.is_output:
            return
        hn = state(node)
        heaps[hn.backend].free(hn.offset, backends[hn.backend].alloc_size(node))
        hn.allocated = False

    for leaf in graph.leafs:
        allocate_node(leaf, which(leaf))

    for node in graph.nodes:
        if node.is_view and node.op != "NONE":
            assert node.view_src is not None
            state(node.view_src).n_views += 1
        if node.is_input:
            allocate_node(node, which(node))
        for src in node.src:
            if src is None:
                continue
            state(src).n_children += 1
            if src.is_input:
                allocate_node(src, which(node))

    for node in graph.nodes:
        backend_id = which(node)
        for parent in node.src:
            if parent is not None:
                allocate_node(parent, backend_id)
        allocate_node(node, backend_id)
        for parent in node.src:
            if parent is None:
                continue
            p_hn = state(parent)
            p_hn.n_children -= 1
            if p_hn.n_children != 0 or p_hn.n_views != 0:
                continue
            if parent.is_view:
                assert parent.view_src is not None
                vs_hn = state(parent.view_src)
                vs_hn.n_views -= 1
                if vs_hn.n_views == 0 and vs_hn.n_children == 0 and vs_hn.allocated:
                    free_node(parent.view_src)
            elif p_hn.allocated:
                free_node(parent)

    return [heap.max_size for heap in heaps]
