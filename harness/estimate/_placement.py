"""Where llama.cpp puts each layer, and what each layer's weights cost on its device.

Layer placement follows llama_model_base::load_tensors: of the ``n_layer + 1`` layers (the last
one is the output layer), the last ``n_gpu_layers`` go to the GPUs, so the output layer is the
first to be offloaded; the token embeddings always stay on the host. Offloaded layers are split
across GPUs at the cumulative, normalised tensor-split points (by default, each GPU's share of
the total memory: llama.cpp uses free memory at load time).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from ._ggml import row_size
from ._model import ModelInfo, TensorRef

__all__ = [
    "HOST",
    "DeviceSpec",
    "Placement",
    "place_layers",
    "repack_types",
    "repacked_bytes",
    "tensor_layer",
    "weight_bytes",
]

HOST = -1
_INPUT_NAMES = ("token_embd.", "position_embd.", "token_types.", "per_layer_token_embd.")
_FIRST_LAYER_NAMES = (
    "token_embd_norm.",
    "rope_freqs.",
    "rope_factors_long.",
    "rope_factors_short.",
)
_CUDA_ALIGNMENT = 128
_CUDA_ROW_PADDING = 512  # MATRIX_ROW_PADDING in ggml-cuda
_HOST_ALIGNMENT = 32


@dataclass(frozen=True)
class DeviceSpec:
    """One GPU: its name, total memory in bytes, and whether it shares memory with the host."""

    name: str = "CUDA0"
    memory: int = 0
    uma: bool = False
    overhead: int | None = None  # runtime overhead; None: the estimator's default


@dataclass(frozen=True)
class Placement:
    """The device of every layer (index ``n_layer`` is the output layer); HOST is -1."""

    layers: tuple[int, ...]
    n_devices: int

    @property
    def output(self) -> int:
        return self.layers[-1]

    def repeating(self, device: int) -> int:
        """How many repeating layers (not the output layer) sit on ``device``."""
        return sum(1 for d in self.layers[:-1] if d == device)

    @property
    def offloaded(self) -> int:
        return sum(1 for d in self.layers if d != HOST)

    @property
    def full(self) -> bool:
        return self.n_devices > 0 and all(d != HOST for d in self.layers)


def place_layers(
    n_layer: int,
    devices: Sequence[DeviceSpec],
    gpu_layers: int | None,
    split_mode: str,
    tensor_split: Sequence[float] | None,
    main_gpu: int,
) -> Placement:
    if not devices:
        return Placement((HOST,) * (n_layer + 1), 0)
    ids = list(range(len(devices)))
    if split_mode == "none":
        ids = [min(max(main_gpu, 0), len(devices) - 1)]
    shares: list[float]
    if tensor_split and any(x > 0 for x in tensor_split):
        shares = [float(tensor_split[i]) if i < len(tensor_split) else 0.0 for i in ids]
    else:
        shares = [float(devices[i].memory or 1) for i in ids]
    total = sum(shares) or 1.0
    splits: list[float] = []
    running = 0.0
    for share in shares:
        running += share
        splits.append(running / total)
    ngl = n_layer + 1 if gpu_layers is None or gpu_layers < 0 else gpu_layers
    start = max(n_layer + 1 - ngl, 0)
    active = min(ngl, n_layer + 1)
    layers: list[int] = []
    for il in range(n_layer + 1):
        if il < start or il - start >= active:
            layers.append(HOST)
            continue
        index = bisect.bisect_right(splits, (il - start) / active)
        layers.append(ids[min(index, len(ids) - 1)])
    return Placement(tuple(layers), len(devices))


def tensor_layer(name: str, n_layer: int) -> int | None:
    """The layer a tensor belongs to: its block, ``n_layer`` for the output, None for input."""
    if name.startswith("blk."):
        return int(name.split(".", 2)[1])
    if name.startswith(_INPUT_NAMES):
        return None
    if name.startswith(_FIRST_LAYER_NAMES):
        return 0
    return n_layer


def cuda_alloc_size(type_name: str, ne0: int, n_bytes: int) -> int:
    """ggml_backend_cuda_buffer_type_get_alloc_size: quantized rows padded to 512 elements once."""
    if (
        type_name.upper() not in ("F32", "F16", "BF16", "I32", "I64", "I16", "I8")
        and ne0 % _CUDA_ROW_PADDING
    ):
        return n_bytes + row_size(type_name, _CUDA_ROW_PADDING - ne0 % _CUDA_ROW_PADDING)
    return n_bytes


def _pad(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def repack_types(cpu_flags: frozenset[str]) -> frozenset[str]:
    """ggml types the CPU backend repacks into its CPU_REPACK buffer on an x86 CPU with these
    ``/proc/cpuinfo`` flags (ggml_repack_get_optimal_repack_type, ggml-cpu/repack.cpp)."""
    found: set[str] = set()
    if "avx2" in cpu_flags:
        found |= {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    if "avx512f" in cpu_flags:
        found.add("Q2_K")
    return frozenset(found)


def _repacked(ref: TensorRef, types: frozenset[str]) -> bool:
    # The repack buffer only takes weights of a MUL_MAT (2-D) or MUL_MAT_ID (3-D, MoE experts)
    # with whole groups of 8 rows; inputs read by GET_ROWS stay where they are.
    if ref.type not in types or ref.name.startswith(_INPUT_NAMES):
        return False
    return len(ref.shape) in (2, 3) and ref.shape[1] % 8 == 0 and ref.name.endswith(".weight")


def repacked_bytes(model: ModelInfo, placement: Placement, types: frozenset[str]) -> int:
    """Bytes of the host's CPU_REPACK model buffer. Only without GPUs: with one, host layers go
    to the GPU's pinned host buffer type, which comes first in make_cpu_buft_list."""
    if placement.n_devices or not types:
        return 0
    return sum(
        _pad(r.n_bytes, _HOST_ALIGNMENT) for r in model.tensors.values() if _repacked(r, types)
    )


def weight_bytes(
    model: ModelInfo,
    placement: Placement,
    mmap: bool,
    repack: frozenset[str] = frozenset(),
) -> dict[int, int]:
    """Model buffer bytes per device (HOST included), as llama.cpp allocates them.

    On the host with mmap, a buffer maps the file from the first to the last byte of the host's
    tensors (per file); otherwise each tensor is allocated, padded to the buffer's alignment.
    Host weights of the ``repack`` types are copied into a CPU_REPACK buffer instead (CPU-only
    runs) and leave the mapped range. A tied output (no ``output.weight``) is a second copy of the
    token embeddings wherever the output layer is not on the host.
    """
    types = repack if not placement.n_devices else frozenset()
    n_layer = model.n_layer
    by_device: dict[int, list[TensorRef]] = {}
    for ref in model.tensors.values():
        layer = tensor_layer(ref.name, n_layer)
        device = HOST if layer is None else placement.layers[min(layer, n_layer)]
        by_device.setdefault(device, []).append(ref)
    tied = "output.weight" not in model.tensors and "token_embd.weight" in model.tensors
    if tied and placement.output != HOST:
        by_device.setdefault(placement.output, []).append(model.tensors["token_embd.weight"])
    result: dict[int, int] = {}
    for device, refs in by_device.items():
        if device == HOST:
            moved = [r for r in refs if _repacked(r, types)]
            refs = [r for r in refs if not _repacked(r, types)]
            result[device] = sum(_pad(r.n_bytes, _HOST_ALIGNMENT) for r in moved)
            if not refs:
                continue
            if mmap:
                total = 0
                for file in {r.file for r in refs}:
                    mine = [r for r in refs if r.file == file]
                    total += max(r.start + r.n_bytes for r in mine) - min(r.start for r in mine)
                result[device] += total
            else:
                result[device] += sum(_pad(r.n_bytes, _HOST_ALIGNMENT) for r in refs)
        else:
            result[device] = sum(
                _pad(
                    cuda_alloc_size(r.type, r.shape[0] if r.shape else 1, r.n_bytes),
                    _CUDA_ALIGNMENT,
                )
                for r in refs
            )
    return result
