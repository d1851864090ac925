"""Run settings: the llama-server options that decide memory, from an image's Cmd, a model.yaml
``memory:`` section or a command line, layered so that what is set explicitly wins.

Every field is ``None`` until something sets it; ``resolved()`` fills the rest with llama-server's
own defaults at the pinned commit (common/common.h, tools/server/server.cpp): context from the
model, batch 2048, ubatch 512, four slots sharing one unified KV cache, flash attention on
where supported, f16 cache, mmap, every layer offloaded, layer split, KV offloaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError
from harness.toolchain import parse_server_args

__all__ = ["CACHE_TYPES", "SPLIT_MODES", "RunSettings"]

CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
SPLIT_MODES = ("none", "layer", "row")
_POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
_TRUE = {"on", "enabled", "true", "1", "yes"}
_FALSE = {"off", "disabled", "false", "0", "no"}


@dataclass(frozen=True)
class RunSettings:
    """llama-server settings that size memory; ``None`` means "not set here"."""

    ctx_size: int | None = None  # -c; 0 or None: the model's training context
    batch_size: int | None = None  # -b
    ubatch_size: int | None = None  # -ub
    parallel: int | None = None  # -np; None: llama-server's auto (4 slots, unified KV)
    kv_unified: bool | None = None  # -kvu / -no-kvu
    flash_attn: bool | None = None  # -fa on|off; None: auto (on where the device supports it)
    cache_type_k: str | None = None  # -ctk
    cache_type_v: str | None = None  # -ctv
    mmap: bool | None = None  # --load-mode none / --no-mmap: False
    gpu_layers: int | None = None  # -ngl; None: all layers (auto/all)
    split_mode: str | None = None  # -sm none|layer|row
    tensor_split: tuple[float, ...] | None = None  # -ts
    main_gpu: int | None = None  # -mg
    kv_offload: bool | None = None  # -nkvo: False
    embeddings: bool | None = None  # --embedding
    pooling: str | None = None  # --pooling
    swa_full: bool | None = None  # --swa-full
    repack: bool | None = None  # --repack / -nr: host weight repacking (CPU_REPACK)
    devices: tuple[str, ...] | None = None  # -dev: ("none",) keeps everything on the host
    cache_ram_mib: int | None = None  # -cram: the prompt cache's cap, grown into at run time
    gpu_layers_draft: int | None = None  # -ngld
    cache_type_k_draft: str | None = None  # -ctkd
    cache_type_v_draft: str | None = None  # -ctvd
    draft_max: int | None = None  # --spec-draft-n-max
    mmproj_offload: bool | None = None  # --no-mmproj-offload: False

    def __post_init__(self) -> None:
        for name in ("cache_type_k", "cache_type_v", "cache_type_k_draft", "cache_type_v_draft"):
            value = getattr(self, name)
            if value is not None and value.lower() not in CACHE_TYPES:
                raise UsageError(f"{name}: {value!r} is not one of {', '.join(CACHE_TYPES)}")
        if self.split_mode is not None and self.split_mode not in SPLIT_MODES:
            raise UsageError(
                f"split_mode: {self.split_mode!r} is not one of {', '.join(SPLIT_MODES)}"
            )
        if self.pooling is not None and self.pooling not in _POOLING:
            raise UsageError(f"pooling: {self.pooling!r} is not one of {', '.join(_POOLING)}")
        for name in ("batch_size", "ubatch_size", "parallel"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1, not {value}")
        if self.ctx_size is not None and self.ctx_size < 0:
            raise UsageError(f"ctx_size must not be negative, not {self.ctx_size}")
        if self.tensor_split is not None and (
            not self.tensor_split or any(x < 0 for x in self.tensor_split)
        ):
            raise UsageError("tensor_split needs one non-negative share per GPU")

    # --- layering ----------------------------------------------------------------------------

    def override(self, other: RunSettings | None) -> RunSettings:
        """These settings with every field ``other`` sets replaced by ``other``'s value."""
        if other is None:
            return self
        changes = {
            f.name: getattr(other, f.name)
            for f in dataclasses.fields(other)
            if getattr(other, f.name) is not None
        }
        return dataclasses.replace(self, **changes)

    def explicit(self) -> dict[str, Any]:
        """The fields that are set, for reports and JSON."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def resolved(self) -> RunSettings:
        """Every field set: llama-server's defaults where nothing else set one.

        ``ctx_size`` 0 stays 0 (the model's context) and ``gpu_layers`` stays ``None`` (all),
        since both depend on the model.
        """
        auto_parallel = self.parallel is None
        return dataclasses.replace(
            self,
            ctx_size=self.ctx_size or 0,
            batch_size=self.batch_size or 2048,
            ubatch_size=self.ubatch_size or 512,
            parallel=4 if auto_parallel else self.parallel,
            kv_unified=self.kv_unified if self.kv_unified is not None else auto_parallel,
            cache_type_k=(self.cache_type_k or "f16").lower(),
            cache_type_v=(self.cache_type_v or "f16").lower(),
            mmap=True if self.mmap is None else self.mmap,
            split_mode=self.split_mode or "layer",
            main_gpu=self.main_gpu or 0,
            kv_offload=True if self.kv_offload is None else self.kv_offload,
            embeddings=bool(self.embeddings),
            swa_full=bool(self.swa_full),
            repack=True if self.repack is None else self.repack,
            cache_ram_mib=8192 if self.cache_ram_mib is None else self.cache_ram_mib,
            cache_type_k_draft=(self.cache_type_k_draft or "f16").lower(),
            cache_type_v_draft=(self.cache_type_v_draft or "f16").lower(),
            draft_max=3 if self.draft_max is None else self.draft_max,
            mmproj_offload=True if self.mmproj_offload is None else self.mmproj_offload,
        )

    @property
    def pooling_type(self) -> int:
        """llama_pooling_type: -1 when unset (the model's own)."""
        return -1 if self.pooling is None else _POOLING[self.pooling]

    # --- sources -----------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, memory: Mapping[str, Any] | None) -> RunSettings:
        """The run settings of a model.yaml ``memory:`` section (budgets and ram are ignored):
        its ``server_args`` (llama-server's own argv), then its named fields over them."""
        if not memory:
            return cls()
        argv = cls.from_cmd(memory.get("server_args") or ())
        gpu_layers = memory.get("gpu_layers")
        if gpu_layers == "all":
            gpu_layers = None
        return argv.override(
            cls(
                ctx_size=memory.get("ctx_size"),
                batch_size=memory.get("batch_size"),
                ubatch_size=memory.get("ubatch_size"),
                parallel=memory.get("parallel"),
                flash_attn=memory.get("flash_attn"),
                cache_type_k=memory.get("cache_type_k"),
                cache_type_v=memory.get("cache_type_v"),
                mmap=memory.get("mmap"),
                kv_offload=memory.get("kv_offload"),
                split_mode=memory.get("split_mode"),
                gpu_layers=gpu_layers,
            )
        )

    @classmethod
    def from_cmd(cls, args: Sequence[str], env: Mapping[str, str] | None = None) -> RunSettings:
        """The settings a llama-server command line sets (an image's Cmd, or what a person
        typed), read through the one model of llama-server's arguments; ``env`` adds the
        ``LLAMA_ARG_*`` variables the server would see. Options that do not size memory are
        accepted and ignored; an argv llama-server would refuse is a UsageError."""
        values: dict[str, Any] = {}
        for arg in parse_server_args(args, env).args:
            handler = _FIELDS.get(arg.key)
            if handler is None:
                continue
            field, kind = handler
            if kind == "bool":
                values[field] = not arg.negative
            elif kind == "rerank":
                values["embeddings"] = True
                values["pooling"] = "rank"
            else:
                values[field] = _convert(arg.name, kind, arg.value)
        return cls(**values)


def _convert(flag: str, kind: str, value: str) -> Any:
    try:
        if kind == "int":
            return int(value)
        if kind == "ngl":
            return None if value in ("auto", "all") else int(value)
        if kind == "split":
            return tuple(float(x) for x in value.replace("/", ",").split(",") if x.strip())
    except ValueError:
        raise UsageError(f"{flag}: {value!r} is not a valid value") from None
    if kind == "load":
        # common/arg.cpp --load-mode: auto means mmap unless a device cannot use it
        if value not in _LOAD_MODES:
            raise UsageError(f"{flag}: {value!r} is not one of {', '.join(_LOAD_MODES)}")
        return value in ("auto", "mmap", "mmap+mlock")
    if kind == "fa":
        word = value.lower()
        if word not in _TRUE | _FALSE | {"auto"}:
            raise UsageError(f"{flag}: {value!r} is not on, off or auto")
        return None if word == "auto" else word in _TRUE
    if kind == "devices":
        return tuple(d.strip() for d in value.split(",") if d.strip())
    if kind == "lower":
        return value.lower()
    return value


_LOAD_MODES = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")
# canonical llama-server option (harness.toolchain's argv model) -> (field, how to read it)
_FIELDS: dict[str, tuple[str, str]] = {
    "--ctx-size": ("ctx_size", "int"),
    "--batch-size": ("batch_size", "int"),
    "--ubatch-size": ("ubatch_size", "int"),
    "--parallel": ("parallel", "int"),
    "--kv-unified": ("kv_unified", "bool"),
    "--flash-attn": ("flash_attn", "fa"),
    "--cache-type-k": ("cache_type_k", "lower"),
    "--cache-type-v": ("cache_type_v", "lower"),
    "--load-mode": ("mmap", "load"),
    "--gpu-layers": ("gpu_layers", "ngl"),
    "--split-mode": ("split_mode", "str"),
    "--tensor-split": ("tensor_split", "split"),
    "--main-gpu": ("main_gpu", "int"),
    "--kv-offload": ("kv_offload", "bool"),
    "--embedding": ("embeddings", "bool"),
    "--pooling": ("pooling", "str"),
    "--rerank": ("pooling", "rerank"),
    "--swa-full": ("swa_full", "bool"),
    "--repack": ("repack", "bool"),
    "--device": ("devices", "devices"),
    "--cache-ram": ("cache_ram_mib", "int"),
    "--spec-draft-ngl": ("gpu_layers_draft", "ngl"),
    "--spec-draft-type-k": ("cache_type_k_draft", "lower"),
    "--spec-draft-type-v": ("cache_type_v_draft", "lower"),
    "--spec-draft-n-max": ("draft_max", "int"),
    "--mmproj-offload": ("mmproj_offload", "bool"),
}
