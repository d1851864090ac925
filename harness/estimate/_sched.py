"""ggml_backend_sched: which backend runs each node, where the graph splits, and which tensors are
copied between backends (ggml/src/ggml-backend.cpp, ggml_backend_sched_split_graph).

Backends are the GPUs in order, then the CPU (lowest priority). A node goes where its
pre-allocated memory is, else where its weight is (a host weight's op moves to the first GPU
when its batch is at least 32 rows: op offload), else it inherits its neighbours' GPU, then
anyone's. Consecutive nodes on one backend form a split; a source on another backend's memory
is copied into the split's backend at the split's start. With pipeline parallelism (several
GPUs, everything offloaded) every copy exists four times and graph inputs are duplicated too.
The result is a graph copy with per-node backends that the allocator (``_alloc``) consumes.
"""

from __future__ import annotations

from collections.abc import Callable

from ._ggml import Graph, Tensor, is_view_op
from ._placement import HOST

__all__ = ["MAX_COPIES", "Split", "schedule"]

MAX_COPIES = 4  # GGML_SCHED_MAX_COPIES
_OFFLOAD_MIN_BATCH = 32  # op_offload_min_batch_size of the CUDA backend


def _batch_size(t: Tensor) -> int:
    if t.op == "GET_ROWS":
        return 0
    if t.op == "MUL_MAT":
        return t.ne[1]
    if t.op in ("MUL_MAT_ID", "ROPE"):
        return t.ne[2]
    return t.ne[1] * t.ne[2] * t.ne[3]


class Split:
    """A run of nodes on one backend (ggml_backend_sched_split)."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.nodes: list[Tensor] = []
        self.inputs: list[Tensor] = []


def schedule(
    graph: Graph,
    n_gpus: int,
    location: Callable[[Tensor], int | None],
    is_weight: Callable[[Tensor], bool],
    n_copies: int = 1,
) -> tuple[Graph, dict[int, int]]:
    """The scheduler's graph copy and the backend of each of its tensors (by id).

    ``location(t)`` is the device of a pre-allocated (external) tensor: a GPU index or HOST.
    Backend ids are GPU indices, and ``n_gpus`` for the CPU.
    """
    cpu = n_gpus
    backend: dict[int, int] = {}

    def of(t: Tensor | None) -> int:
        return -1 if t is None else backend.get(id(t), -1)

    def from_buffer(t: Tensor) -> int:
        root = t.view_src if t.view_src is not None else t
        if not root.external:
            return -1
        device = location(root)
        return cpu if device is None or device == HOST else device

    def supported(t: Tensor, b: int) -> bool:
        # ggml_backend_sched_buffer_supported: a GPU runs on its own memory, the CPU on host memory
        root = t.view_src if t.view_src is not None else t
        if root.external:
            where = from_buffer(root)
        else:
            where = of(t)
            if where == -1 and t.view_src is not None:
                where = of(t.view_src)
        return where != -1 and where == b

    def from_cur(t: Tensor) -> int:
        b = from_buffer(t)
        if b != -1:
            return b
        if t.is_input:
            return cpu
        if t.op in ("ROPE", "FLASH_ATTN_EXT"):
            return -1
        for src in t.src:
            if src is not None and src.external and is_weight(src):
                b = from_buffer(src)
                if b == cpu and n_gpus > 0 and _batch_size(t) >= _OFFLOAD_MIN_BATCH:
                    return 0
                return b
        return -1

    for leaf in graph.leafs:
        backend[id(leaf)] = from_cur(leaf)
    for node in graph.nodes:
        if of(node) == -1:
            backend[id(node)] = from_cur(node)

    ops = [n for n in graph.nodes if not is_view_op(n.op)]
    for order, skip_cpu in ((ops, True), (ops[::-1], True), (ops, False), (ops[::-1], False)):
        current = -1
        for node in order:
            b = of(node)
            if b != -1:
                current = -1 if (skip_cpu and b == cpu) else b
            elif current != -1:
                backend[id(node)] = current
    for node in ops:
        if of(node) == -1:
            best, best_count = cpu, -1
            for b in range(n_gpus + 1):
                count = sum(1 for s in node.src if s is not None and supported(s, b))
                if count > best_count:
                    best, best_count = b, count
            backend[id(node)] = best
    for node in graph.nodes:
        if of(node) == -1 and node.view_src is not None:
            backend[id(node)] = of(node.view_src)
        for src in node.src:
            if src is not None and of(src) == -1:
                backend[id(src)] = of(src.view_src) if src.view_src is not None else of(node)
        if of(node) == -1:
            backend[id(node)] = cpu

    splits = _split(graph, ops, backend, supported, is_weight)
    return _graph_copy(graph, splits, backend, n_copies, cpu)


def _split(
    graph: Graph,
    ops: list[Tensor],
    backend: dict[int, int],
    supported: Callable[[Tensor, int], bool],
    is_weight: Callable[[Tensor], bool],
) -> list[Split]:
    splits: list[Split] = []
    if not ops:
        return splits
    split = Split(backend[id(ops[0])])
    splits.append(split)
    copied: set[tuple[int, int]] = set()
    for node in graph.nodes:
        if is_view_op(node.op):
            split.nodes.append(node)
            continue
        b = backend[id(node)]
        need_new = False
        if b == split.backend and split.inputs:
            # a weight from an incompatible backend starts a new split, so that the memory its
            # copy took can be reused by the next one
            need_new = any(
                src is not None
                and src.external
                and is_weight(src)
                and backend.get(id(src), -1) != split.backend
                and not supported(src, split.backend)
                for src in node.src
            )
        if b != split.backend or need_new:
            split = Split(b)
            splits.append(split)
        split.nodes.append(node)
        for src in node.src:
            if src is None:
                continue
            if backend.get(id(src), -1) != split.backend and not supported(src, split.backend):
                # one copy per tensor and backend for the whole graph: a later split on the
                # same backend reads the copy an earlier split made
                key = (id(src), split.backend)
                if key not in copied:
                    copied.add(key)
                    split.inputs.append(src)
    return splits


def _graph_copy(
    graph: Graph, splits: list[Split], backend: dict[int, int], n_copies: int, cpu: int
) -> tuple[Graph, dict[int, int]]:
    copy = Graph()
    ids = dict(backend)
    copies: dict[tuple[int, int], Tensor] = {}
    for split in splits:
        for src in split.inputs:
            key = (id(src), split.backend)
            replica = copies.get(key)
            if replica is None:
                replica = Tensor("NONE", src.type, src.ne, src.nb, name=f"{src.name}#copy")
                if n_copies > 1:
                    replica.is_input = replica.is_output = True
                copies[key] = replica
            dep = Tensor("VIEW", src.type, src.ne, src.nb, src=(src,), view_src=src.view_src or src)
            ids[id(dep)] = backend.get(id(src), cpu)
            ids[id(replica)] = split.backend
            copy.nodes.append(dep)
            copy.nodes.append(replica)
        for node in split.nodes:
            node.src = tuple(
                copies.get((id(s), split.backend), s) if s is not None else None for s in node.src
            )
            copy.nodes.append(node)
    if n_copies > 1:
        for key, replica in copies.items():
            for _ in range(n_copies - 1):
                extra = Tensor(
                    "NONE", replica.type, replica.ne, replica.nb, is_input=True, is_output=True
                )
                ids[id(extra)] = key[1]
                copy.leafs.append(extra)
        for leaf in graph.leafs:
            if leaf.is_input:
                leaf.is_output = True
                for _ in range(n_copies - 1):
                    extra = Tensor(
                        "NONE", leaf.type, leaf.ne, leaf.nb, is_input=True, is_output=True
                    )
                    ids[id(extra)] = ids.get(id(leaf), cpu)
                    copy.leafs.append(extra)
    copy.leafs.extend(graph.leafs)
    return copy, ids
