"""Figures derived from a GGUF header, each as llama.cpp defines it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import GGUFError, Location

from ._constants import Keys
from ._file_type import model_file_type
from ._records import ArraySummary, GGUFHeader, MetadataValue

__all__ = ["ArraySummary", "GGUFFacts", "derive_facts"]


@dataclass(frozen=True)
class GGUFFacts:
    """What a model is, read from its header(s). Split models are one model: sums over shards."""

    path: str  # the file named by the user (first shard of a split model)
    paths: tuple[str, ...]  # every shard, in order
    version: int
    byte_order: str  # "little" or "big"
    architecture: str
    name: str | None
    file_type: str  # e.g. "Q4_K_M": harness.gguf.file_type, llama.cpp's rule
    file_type_inferred: bool  # no general.file_type: guessed from the tensor types
    parameters: int  # sum of tensor element counts
    size: int  # bytes of tensor data (sum of ggml_nbytes)
    bpw: float  # size * 8 / parameters
    file_size: int  # bytes on disk, all shards
    tensor_count: int
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | tuple[int, ...] | None  # per-layer arrays stay tuples
    head_count_kv: int | tuple[int, ...] | None
    vocab_size: int | None
    chat_template: bool
    tokenizer_model: str | None
    metadata: Mapping[str, Any]  # scalar values; arrays as ArraySummary

    def to_json(self) -> dict[str, Any]:
        """A dict json.dumps accepts as is (strict JSON: non-finite floats become None)."""
        result: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "metadata":
                value = {key: _json_value(item) for key, item in value.items()}
            result[name] = _json_value(value)
        return result


def derive_facts(headers: Sequence[GGUFHeader], paths: Sequence[str] | None = None) -> GGUFFacts:
    """One model's facts from its header, or from all its shards' headers in order.

    The first shard carries the model's metadata; tensors, sizes and counts are summed.
    """
    if not headers:
        raise ValueError("derive_facts needs at least one header")
    first = headers[0]
    shard_paths = tuple(paths) if paths is not None else tuple(h.path or "" for h in headers)
    meta = first.metadata
    arch = _text(first.get(Keys.General.ARCHITECTURE))
    if arch is None:
        raise GGUFError(
            f"no {Keys.General.ARCHITECTURE} key: llama.cpp cannot load this as a model",
            Location(path=shard_paths[0], offset=0),
        )
    tensors = [t for h in headers for t in h.tensors]
    parameters = sum(t.n_elements for t in tensors)
    size = sum(t.n_bytes for t in tensors)
    kind = model_file_type(headers)
    tokens = meta.get(Keys.Tokenizer.LIST)
    vocab = _int(first.get(Keys.LLM.VOCAB_SIZE.format(arch=arch)))
    if vocab is None and tokens is not None and tokens.summary is not None:
        vocab = tokens.summary.length
    return GGUFFacts(
        path=shard_paths[0],
        paths=shard_paths,
        version=first.version,
        byte_order=first.byte_order,
        architecture=arch,
        name=_text(first.get(Keys.General.NAME)),
        file_type=kind.name,
        file_type_inferred=kind.inferred,
        parameters=parameters,
        size=size,
        bpw=size * 8 / parameters if parameters else 0.0,
        file_size=sum(h.file_size for h in headers),
        tensor_count=len(tensors),
        context_length=_int(first.get(Keys.LLM.CONTEXT_LENGTH.format(arch=arch))),
        embedding_length=_int(first.get(Keys.LLM.EMBEDDING_LENGTH.format(arch=arch))),
        block_count=_int(first.get(Keys.LLM.BLOCK_COUNT.format(arch=arch))),
        head_count=_per_layer(first.get(Keys.Attention.HEAD_COUNT.format(arch=arch))),
        head_count_kv=_per_layer(first.get(Keys.Attention.HEAD_COUNT_KV.format(arch=arch))),
        vocab_size=vocab,
        chat_template=Keys.Tokenizer.CHAT_TEMPLATE in meta,
        tokenizer_model=_text(first.get(Keys.Tokenizer.MODEL)),
        metadata={key: field.summary or field.value for key, field in meta.items()},
    )


def _int(value: MetadataValue | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: MetadataValue | None) -> str | None:
    return value if isinstance(value, str) else None


def _per_layer(value: MetadataValue | None) -> int | tuple[int, ...] | None:
    if isinstance(value, tuple) and all(_int(v) is not None for v in value):
        return tuple(int(v) for v in value)
    return _int(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, ArraySummary):
        return {"type": value.type, "length": value.length}
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
