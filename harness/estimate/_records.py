"""The estimator's results: per device, per model part, and for the whole run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeviceEstimate", "Estimate"]


@dataclass(frozen=True)
class DeviceEstimate:
    """Memory one device (the host, or one GPU) needs, in bytes, by component.

    ``other`` is the output (logits/embeddings) buffer on the host and a fixed runtime overhead
    on a GPU (driver context, library workspaces), neither of which llama.cpp reports as a buffer.
    """

    name: str
    layers: int  # repeating layers placed here
    output_layer: bool  # the output layer (final norm and LM head) is here
    weights: int
    kv_cache: int
    compute: int
    other: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.other

    def plus(self, other: DeviceEstimate) -> DeviceEstimate:
        """The two together, as when a drafter or projector shares the device."""
        return DeviceEstimate(
            self.name,
            self.layers + other.layers,
            self.output_layer or other.output_layer,
            self.weights + other.weights,
            self.kv_cache + other.kv_cache,
            self.compute + other.compute,
            self.other + other.other,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layers,
            "output_layer": self.output_layer,
            "weights": self.weights,
            "kv_cache": self.kv_cache,
            "compute": self.compute,
            "other": self.other,
            "total": self.total,
        }


@dataclass(frozen=True)
class Estimate:
    """Memory llama-server needs to run a model (and its drafter, projector, adapters).

    ``host`` is system RAM as a discrete-GPU machine uses it (non-UMA); ``devices`` are the GPUs.
    On a unified-memory machine (UMA) every buffer comes out of the same RAM, and a GPU maps
    mmap'd weights rather than copying them: ``ram_uma`` is that total, and ``vram_uma(i)`` is
    what GPU ``i`` adds to it.
    """

    arch: str
    context_size: int  # n_ctx as llama.cpp pads it: the cells of all sequences together
    context_per_seq: int
    batch_size: int
    ubatch_size: int
    parallel: int
    kv_unified: bool
    flash_attn: bool
    cache_type_k: str
    cache_type_v: str
    mmap: bool
    embedding_only: bool
    distributable: bool
    offload_layers: int  # layers on GPUs, the output layer counted as one
    total_layers: int  # n_layer + 1
    full_offload: bool
    host: DeviceEstimate
    devices: tuple[DeviceEstimate, ...]
    exact: bool  # every compute graph was modelled op by op for its architecture
    parts: Mapping[str, Estimate] = field(default_factory=dict)  # drafter, projector, adapters
    notes: tuple[str, ...] = ()

    @property
    def ram(self) -> int:
        return self.host.total

    @property
    def vram(self) -> tuple[int, ...]:
        return tuple(d.total for d in self.devices)

    def vram_uma(self, index: int) -> int:
        device = self.devices[index]
        return device.total - (device.weights if self.mmap else 0)

    @property
    def ram_uma(self) -> int:
        return self.host.total + sum(self.vram_uma(i) for i in range(len(self.devices)))

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "context_size": self.context_size,
            "context_per_seq": self.context_per_seq,
            "batch_size": self.batch_size,
            "ubatch_size": self.ubatch_size,
            "parallel": self.parallel,
            "kv_unified": self.kv_unified,
            "flash_attn": self.flash_attn,
            "cache_type_k": self.cache_type_k,
            "cache_type_v": self.cache_type_v,
            "mmap": self.mmap,
            "embedding_only": self.embedding_only,
            "distributable": self.distributable,
            "offload_layers": self.offload_layers,
            "total_layers": self.total_layers,
            "full_offload": self.full_offload,
            "exact": self.exact,
            "ram": {"uma": self.ram_uma, "non_uma": self.ram, **self.host.to_json()},
            "devices": [
                {"uma": self.vram_uma(i), "non_uma": d.total, **d.to_json()}
                for i, d in enumerate(self.devices)
            ],
            "parts": {name: part.to_json() for name, part in self.parts.items()},
            "notes": list(self.notes),
        }
