"""The context llama.cpp builds from run settings (llama_context's constructor, llama-cparams),
and the KV cache geometry that follows from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._model import ModelInfo
from ._settings import RunSettings

__all__ = ["ContextParams", "KVGeometry", "kv_geometry", "pad", "server_context"]

_CTX_PAD = 256  # llama_context pads n_ctx (and n_ctx_seq) to this


def pad(value: int, to: int) -> int:
    return -(-value // to) * to


@dataclass(frozen=True)
class ContextParams:
    """llama_cparams, as resolved for one model and one set of run settings."""

    n_ctx: int  # after padding; the cells of all streams together
    n_ctx_seq: int  # cells one sequence may use (the KV size per stream)
    n_batch: int
    n_ubatch: int
    n_seq_max: int
    kv_unified: bool
    n_outputs_max: int
    flash_attn: bool
    type_k: str
    type_v: str
    offload_kqv: bool
    embeddings: bool
    pooling: int
    swa_full: bool
    causal: bool

    @classmethod
    def resolve(
        cls,
        model: ModelInfo,
        *,
        n_ctx: int,
        n_batch: int,
        n_ubatch: int,
        n_seq_max: int,
        kv_unified: bool,
        n_outputs_max: int,
        flash_attn: bool,
        type_k: str,
        type_v: str,
        offload_kqv: bool = True,
        embeddings: bool = False,
        pooling: int = -1,
        swa_full: bool = False,
    ) -> ContextParams:
        n_ctx = n_ctx or model.n_ctx_train
        causal = model.causal
        batch = min(n_ctx, n_batch) if causal else n_batch
        ubatch = min(batch, n_ubatch or batch)
        if pooling < 0:
            pooling = model.pooling if model.pooling >= 0 else 0
        n_seq_max = max(1, n_seq_max)
        outputs = batch if n_outputs_max <= 0 or model.arch == "t5" else n_outputs_max
        n_ctx = pad(n_ctx, _CTX_PAD)
        if kv_unified:
            n_ctx_seq = n_ctx
        else:
            n_ctx_seq = pad(n_ctx // n_seq_max, _CTX_PAD)
            n_ctx = n_ctx_seq * n_seq_max
        return cls(
            n_ctx=n_ctx,
            n_ctx_seq=n_ctx_seq,
            n_batch=batch,
            n_ubatch=ubatch,
            n_seq_max=n_seq_max,
            kv_unified=kv_unified,
            n_outputs_max=outputs,
            flash_attn=flash_attn,
            type_k=type_k.upper(),
            type_v=type_v.upper(),
            offload_kqv=offload_kqv,
            embeddings=embeddings,
            pooling=pooling if embeddings else 0,
            swa_full=swa_full,
            causal=causal,
        )


@dataclass(frozen=True)
class KVGeometry:
    """Cells per stream of the base and sliding-window caches, and the number of streams."""

    size: int
    size_swa: int
    n_stream: int


def kv_geometry(model: ModelInfo, cp: ContextParams) -> KVGeometry:
    n_stream = 1 if cp.kv_unified else cp.n_seq_max
    size = cp.n_ctx_seq
    size_swa = size
    if any(model.is_swa) and not cp.swa_full:
        # llama_kv_cache_iswa: the window per sequence plus one ubatch, padded to 256
        window = model.n_swa * (cp.n_seq_max if cp.kv_unified else 1) + cp.n_ubatch
        size_swa = pad(min(size, window), _CTX_PAD)
    return KVGeometry(size=size, size_swa=size_swa, n_stream=n_stream)


def server_context(
    model: ModelInfo, settings: RunSettings, *, with_draft: bool = False
) -> ContextParams:
    """The context llama-server creates for ``model`` under ``settings`` (resolved here).

    llama-server limits the outputs a batch may ask for to one per slot (plus the drafted
    tokens when a draft model speculates), except for embeddings, where every token may be an
    output; an embedding server also runs with the batch no larger than the ubatch.
    """
    s = settings.resolved()
    assert s.batch_size is not None and s.ubatch_size is not None and s.parallel is not None
    batch, ubatch = s.batch_size, s.ubatch_size
    pooling = s.pooling_type
    embeddings = bool(s.embeddings)
    if embeddings and batch > ubatch:
        batch = ubatch
    if embeddings or pooling > 0:
        outputs = batch
    else:
        per_seq = 1 + ((s.draft_max or 0) if with_draft else 0)
        outputs = max(1, min(batch, s.parallel * per_seq))
    return ContextParams.resolve(
        model,
        n_ctx=s.ctx_size or 0,
        n_batch=batch,
        n_ubatch=ubatch,
        n_seq_max=s.parallel,
        kv_unified=bool(s.kv_unified),
        n_outputs_max=outputs,
        flash_attn=True if s.flash_attn is None else s.flash_attn,
        type_k=s.cache_type_k or "f16",
        type_v=s.cache_type_v or "f16",
        offload_kqv=bool(s.kv_offload),
        embeddings=embeddings,
        pooling=pooling,
        swa_full=bool(s.swa_full),
    )
