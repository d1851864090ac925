"""What the store hands out: a stored model (its files usable in place), a ``list`` row, the
outcome of a removal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import StoreError

from ._unpack import clean_name

__all__ = ["Collected", "ModelRow", "ModelSummary", "StoredModel"]


@dataclass(frozen=True)
class StoredModel:
    """A model in the store. ``root`` holds the image's files (hard links into the store's
    single copy), so ``model_file`` can be handed to llama.cpp as is; do not write to them."""

    reference: str  # "127.0.0.1:5000/smollm2:q4_1" (or "...@sha256:..." when pulled by digest)
    manifest_digest: str
    config_digest: str  # the model ID, as the seed's
    config_media_type: str
    config: Mapping[str, Any]
    annotations: Mapping[str, str]
    root: Path
    model_file: Path | None  # the main GGUF, when the format names one
    cmd: tuple[str, ...]  # the image's llama-server arguments (seed images), as in-image paths
    added: str

    @property
    def id(self) -> str:
        """The short model ID (12 hex digits of the config digest), as ``list`` shows it."""
        return self.config_digest.split(":", 1)[1][:12]

    def path(self, in_image_path: str) -> Path:
        """The host path of an in-image path (``/models/x.gguf`` or ``models/x.gguf``)."""
        rel = clean_name(in_image_path.lstrip("/"), self.reference)
        path = self.root / rel
        if not path.exists() or not path.resolve().is_relative_to(self.root.resolve()):
            raise StoreError(f"{in_image_path!r} is not in {self.reference}")
        return path

    def command(self) -> list[str]:
        """``cmd`` with every argument that names a file of the image rewritten to its host
        path: the arguments to run the model with a local llama-server."""
        result: list[str] = []
        for arg in self.cmd:
            rel = arg.lstrip("/")
            candidate = self.root / rel if rel and ".." not in rel.split("/") else None
            if candidate is not None and candidate.is_file():
                result.append(str(candidate))
            else:
                result.append(arg)
        return result


@dataclass(frozen=True)
class ModelRow:
    """One line of ``list``: the seed's columns as data (the CLI formats them)."""

    name: str  # NAME: registry/repository
    tag: str  # TAG: "<none>" when pulled by digest
    id: str  # ID: the config digest (full; short_id for display)
    arch: str  # ARCH
    params: str  # PARAMS, e.g. "134.52 M"
    bpw: str  # BPW, e.g. "5.75 bpw"
    type: str  # TYPE, e.g. "Q4_1"
    usage: str  # USAGE, e.g. "text-to-text"
    created: str  # CREATED, RFC 3339 as the image says
    size: int  # SIZE in bytes (the GGUF files)
    format: str  # "gguf-packer", "modelpack", "docker-model-runner" or "image"
    reference: str

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "NAME",
        "TAG",
        "ID",
        "ARCH",
        "PARAMS",
        "BPW",
        "TYPE",
        "USAGE",
        "CREATED",
        "SIZE",
    )


@dataclass(frozen=True)
class Collected:
    """What a removal or collection deleted."""

    references: tuple[str, ...]  # references removed
    blobs: tuple[str, ...]  # digests of blobs, layers and model directories deleted
    freed: int  # bytes given back to the filesystem


@dataclass(frozen=True)
class ModelSummary:
    """``inspect REF``: one model's row, plus what its main GGUF says of context and layers."""

    row: ModelRow
    context: int | None  # the model's training context ({arch}.context_length)
    layers: int | None  # {arch}.block_count
    labels: Mapping[str, str]
