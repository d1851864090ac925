"""``estimate``: the memory llama-server needs for a model, per device, by component."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Union

from harness.gguf import GGUFFacts, GGUFHeader, read_header, shard_paths
from harness.toolchain import cpu_flags

from ._archs import EXACT_ARCHS
from ._compute import compute_buffers
from ._context import ContextParams, server_context
from ._kv import kv_bytes
from ._model import ModelInfo, model_info
from ._placement import (
    HOST,
    DeviceSpec,
    Placement,
    place_layers,
    repack_types,
    repacked_bytes,
    tensor_layer,
    weight_bytes,
)
from ._records import DeviceEstimate, Estimate
from ._settings import RunSettings

__all__ = ["GPU_OVERHEAD", "ModelSource", "estimate", "load_model"]

# Memory a GPU loses to the runtime before llama.cpp allocates anything: CUDA context, cuBLAS
# workspace, ggml's CUDA pool for temporaries. Not measured here (no GPU): a deliberate
# overestimate of the few hundred MiB these take on current drivers.
GPU_OVERHEAD = 512 * 1024 * 1024

# a header (or every shard's), facts read from a file (re-read for their tensors), a path, or
# a ModelInfo already made (model_info, model_info_from_seed, load_model)
ModelSource = Union[GGUFHeader, Sequence[GGUFHeader], GGUFFacts, ModelInfo, str, "os.PathLike[str]"]


def load_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Read a model's header(s) from disk, every shard, with the per-layer arrays it needs."""
    first = os.fspath(path)
    probe = read_header(first)
    arch = probe.get("general.architecture")
    prefix = f"{arch}." if isinstance(arch, str) else "\0"
    keep = [key for key, f in probe.metadata.items() if f.item_type and key.startswith(prefix)]
    headers = [
        read_header(p, arrays=keep) if keep else read_header(p) for p in shard_paths(first, probe)
    ]
    return model_info(headers)


def _info(source: ModelSource) -> ModelInfo:
    if isinstance(source, ModelInfo):
        return source
    if isinstance(source, GGUFFacts):
        return load_model(source.path)
    if isinstance(source, str | os.PathLike):
        return load_model(source)
    return model_info(source)


def estimate(
    model: ModelSource,
    settings: RunSettings | None = None,
    devices: Sequence[DeviceSpec] = (),
    *,
    drafter: ModelSource | None = None,
    projector: ModelSource | None = None,
    adapters: Sequence[ModelSource] = (),
) -> Estimate:
    """Memory for ``model`` run by llama-server with ``settings`` on ``devices`` (GPUs; none:
    CPU only), plus a draft model, a multimodal projector and LoRA adapters when given."""
    s = (settings or RunSettings()).resolved()
    info = _info(model)
    main = _estimate_model(info, s, devices, with_draft=drafter is not None)
    parts: dict[str, Estimate] = {}
    host, gpus = main.host, list(main.devices)
    if drafter is not None:
        # common_base_params_to_speculative: the main context's sizes, the draft's own cache
        # types and GPU layers (none set: all), never embeddings
        draft_settings = dataclasses.replace(
            s,
            gpu_layers=s.gpu_layers_draft,
            cache_type_k=s.cache_type_k_draft,
            cache_type_v=s.cache_type_v_draft,
            embeddings=False,
            pooling=None,
        )
        part = _estimate_model(_info(drafter), draft_settings, devices, overhead=False)
        parts["drafter"] = part
        host, gpus = (
            host.plus(part.host),
            [a.plus(b) for a, b in zip(gpus, part.devices, strict=True)],
        )
    if projector is not None:
        part = _projector(_info(projector), s, devices)
        parts["projector"] = part
        host, gpus = (
            host.plus(part.host),
            [a.plus(b) for a, b in zip(gpus, part.devices, strict=True)],
        )
    for index, adapter in enumerate(adapters):
        part = _adapter(_info(adapter), info, s, devices)
        parts[f"adapter{index}"] = part
        host, gpus = (
            host.plus(part.host),
            [a.plus(b) for a, b in zip(gpus, part.devices, strict=True)],
        )
    if not parts:
        return main
    notes = list(main.notes)
    for name, part in parts.items():
        notes.extend(f"{name}: {note}" for note in part.notes)
    return _replace(
        main, host=host, devices=tuple(gpus), parts={"model": main, **parts}, notes=tuple(notes)
    )


def _estimate_model(
    info: ModelInfo,
    s: RunSettings,
    devices: Sequence[DeviceSpec],
    *,
    with_draft: bool = False,
    overhead: bool = True,
) -> Estimate:
    cp = server_context(info, s, with_draft=with_draft)
    placement = place_layers(
        info.n_layer,
        devices,
        s.gpu_layers,
        s.split_mode or "layer",
        s.tensor_split,
        s.main_gpu or 0,
    )
    types = repack_types(cpu_flags()) if s.repack else frozenset()
    weights = weight_bytes(info, placement, bool(s.mmap), types)
    kv = kv_bytes(info, cp, placement)
    notes: list[str] = []
    exact = info.arch in EXACT_ARCHS
    try:
        compute = compute_buffers(info, cp, placement, split_mode=s.split_mode or "layer")
    except (AssertionError, KeyError, IndexError, ValueError, NotImplementedError) as error:
        compute = _rough_compute(info, cp, placement)
        exact = False
        notes.append(f"compute buffers of {info.arch} are a rough bound ({type(error).__name__})")
    if not exact and not notes:
        notes.append(f"compute graph of {info.arch} modelled with the generic decoder")
    repacked = repacked_bytes(info, placement, types)
    if repacked:
        notes.append(
            f"RAM includes {repacked / 2**20:.2f} MiB of weights llama-server repacks for this CPU"
            f" ({', '.join(sorted(types))}; CPU_REPACK buffer); --no-repack keeps them mapped"
        )
    if devices:
        notes.append("GPU buffers follow llama.cpp's CUDA sources; not measured on a GPU")
    if devices and s.split_mode == "row":
        notes.append("row split modelled as layer split")
    output = _output_bytes(info, cp)

    def device(index: int, name: str, other: int) -> DeviceEstimate:
        return DeviceEstimate(
            name=name,
            layers=placement.repeating(index),
            output_layer=placement.output == index,
            weights=weights.get(index, 0),
            kv_cache=kv.per_device.get(index, 0),
            compute=compute.get(index, 0),
            other=other,
        )

    host = device(HOST, "RAM", output)
    gpus = tuple(
        device(
            i,
            spec.name,
            (spec.overhead if spec.overhead is not None else GPU_OVERHEAD) if overhead else 0,
        )
        for i, spec in enumerate(devices)
    )
    return Estimate(
        arch=info.arch,
        context_size=cp.n_ctx,
        context_per_seq=cp.n_ctx_seq,
        batch_size=cp.n_batch,
        ubatch_size=cp.n_ubatch,
        parallel=cp.n_seq_max,
        kv_unified=cp.kv_unified,
        flash_attn=cp.flash_attn,
        cache_type_k=cp.type_k.lower(),
        cache_type_v=cp.type_v.lower(),
        mmap=bool(s.mmap),
        embedding_only=info.encoder,
        distributable=info.n_layer > 1,
        offload_layers=placement.offloaded,
        total_layers=info.n_layer + 1,
        full_offload=placement.full,
        host=host,
        devices=gpus,
        exact=exact,
        notes=tuple(notes),
    )


def _output_bytes(info: ModelInfo, cp: ContextParams) -> int:
    """llama_context::output_reserve at creation: logits (always) and embeddings, per sequence."""
    floats = info.n_vocab + (info.n_embd if cp.embeddings else 0)
    return floats * cp.n_seq_max * 4


def _rough_compute(info: ModelInfo, cp: ContextParams, placement: Placement) -> dict[int, int]:
    """An upper-leaning bound for architectures whose graph is not modelled: the larger of the
    attention scores with their mask and the logits, plus a few hidden-state-sized tensors."""
    n_tok = min(cp.n_ctx, cp.n_ubatch)
    heads = max(info.n_head, default=1) or 1
    hidden = max(info.n_embd, max(info.n_ff, default=0)) * n_tok * 4
    # the f16 mask with flash attention; the f32 scores of every head and the mask without
    per_cell = 2 if cp.flash_attn else (heads + 1) * 4
    attn = cp.n_ctx_seq * n_tok * per_cell
    logits = min(n_tok, cp.n_outputs_max) * info.n_vocab * 4
    total = max(attn, logits) + 4 * hidden
    target = placement.layers[0] if placement.full else HOST
    return {target: total}


def _projector(info: ModelInfo, s: RunSettings, devices: Sequence[DeviceSpec]) -> Estimate:
    """A multimodal projector (clip/mtmd): its weights on the first GPU unless kept on the host."""
    size = sum(t.n_bytes for t in info.tensors.values())
    on_gpu = bool(devices) and bool(s.mmproj_offload)
    placement = Placement((0 if on_gpu else HOST,), len(devices))
    host = DeviceEstimate("RAM", 0, False, 0 if on_gpu else size, 0, 0, 0)
    gpus = tuple(
        DeviceEstimate(d.name, 0, False, size if on_gpu and i == 0 else 0, 0, 0, 0)
        for i, d in enumerate(devices)
    )
    return _part(
        info, s, host, gpus, placement, "projector compute buffer (image encoder) not modelled"
    )


def _adapter(
    info: ModelInfo, base: ModelInfo, s: RunSettings, devices: Sequence[DeviceSpec]
) -> Estimate:
    """A LoRA adapter or control vector: each tensor on the device of the layer it modifies."""
    placement = place_layers(
        base.n_layer,
        devices,
        s.gpu_layers,
        s.split_mode or "layer",
        s.tensor_split,
        s.main_gpu or 0,
    )
    per_device: dict[int, int] = {}
    for ref in info.tensors.values():
        layer = tensor_layer(ref.name, base.n_layer)
        device = HOST if layer is None else placement.layers[min(layer, base.n_layer)]
        per_device[device] = per_device.get(device, 0) + -(-ref.n_bytes // 128) * 128
    host = DeviceEstimate("RAM", 0, False, per_device.get(HOST, 0), 0, 0, 0)
    gpus = tuple(
        DeviceEstimate(d.name, 0, False, per_device.get(i, 0), 0, 0, 0)
        for i, d in enumerate(devices)
    )
    return _part(info, s, host, gpus, placement, "adapter compute (LoRA products) not modelled")


def _part(
    info: ModelInfo,
    s: RunSettings,
    host: DeviceEstimate,
    gpus: tuple[DeviceEstimate, ...],
    placement: Placement,
    note: str,
) -> Estimate:
    return Estimate(
        arch=info.arch, context_size=0, context_per_seq=0, batch_size=0, ubatch_size=0,
        parallel=0, kv_unified=False, flash_attn=False, cache_type_k="", cache_type_v="",
        mmap=bool(s.mmap), embedding_only=False, distributable=False,
        offload_layers=placement.offloaded, total_layers=len(placement.layers),
        full_offload=placement.full, host=host, devices=gpus, exact=False, notes=(note,),
    )  # fmt: skip


def _replace(e: Estimate, **changes: object) -> Estimate:
    return dataclasses.replace(e, **changes)  # type: ignore[arg-type]
