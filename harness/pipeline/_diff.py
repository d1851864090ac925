"""What changed between two builds of a model: size, BPW, tensor types, metadata, labels, the
host memory llama-server takes at each one's own settings, and the quality figures publishing
recorded when both carry them. A reviewer reads "size -3 %, RAM +120 MiB" before merging."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.estimate import RunSettings, estimate
from harness.gguf import ArraySummary, read_header
from harness.oci import LABEL_PREFIX
from harness.units import format_count, format_size

from ._artifact import Artifact

__all__ = ["Change", "ModelDiff", "diff_models"]


@dataclass(frozen=True)
class Change:
    """One thing that differs; ``before``/``after`` are ``None`` where it was absent."""

    what: str  # "size", "tensors Q4_K", "metadata general.name", "label gguf.model.bpw"
    before: str | None
    after: str | None
    delta: str | None = None  # "+3.1 %", "+120.00 MiB" for sizes and counts


@dataclass(frozen=True)
class ModelDiff:
    before: str
    after: str
    changes: tuple[Change, ...]  # facts first, then tensor types, metadata, labels

    def to_json(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "changes": [vars(change) for change in self.changes],
        }


def diff_models(before: Artifact, after: Artifact, names: tuple[str, str]) -> ModelDiff:
    """Everything that differs between two models (any form ``resolve_artifact`` takes)."""
    a, b = before.subject.facts, after.subject.facts
    changes: list[Change] = []
    for what, x, y in (
        ("architecture", a.architecture, b.architecture),
        ("file type", a.file_type, b.file_type),
        ("chat template", a.chat_template, b.chat_template),
        ("context length", a.context_length, b.context_length),
        ("BPW", round(a.bpw, 3), round(b.bpw, 3)),
    ):
        if x != y:
            changes.append(Change(what, str(x), str(y)))
    for what, m, n, show in (
        ("size", a.size, b.size, format_size),
        ("file size", a.file_size, b.file_size, format_size),
        ("parameters", a.parameters, b.parameters, format_count),
        ("tensors", a.tensor_count, b.tensor_count, str),
        ("RAM", _ram(before), _ram(after), format_size),
    ):
        if m != n:
            changes.append(Change(what, show(m), show(n), _delta(m, n, show)))
    changes += _mapping("tensors", _tensor_types(before), _tensor_types(after))
    changes += _mapping("metadata", _metadata(a.metadata), _metadata(b.metadata))
    labels_a, labels_b = before.subject.labels or {}, after.subject.labels or {}
    changes += _mapping("label", labels_a, labels_b)
    quality_a, quality_b = _quality(before), _quality(after)
    if quality_a and quality_b:  # figures compare only where both were measured
        changes += _mapping("quality", quality_a, quality_b)
    return ModelDiff(names[0], names[1], tuple(changes))


def _quality(artifact: Artifact) -> dict[str, str]:
    """The ``quality.*`` annotations of a published image (``kld-mean``, ``ppl-ratio``, ...)."""
    prefix = f"{LABEL_PREFIX}quality."
    return {
        k.removeprefix(prefix): v for k, v in artifact.annotations.items() if k.startswith(prefix)
    }


def _ram(artifact: Artifact) -> int:
    """Host memory at the image's own Cmd settings on a CPU-only machine, as llama-server
    allocates it (mmap'd weights not counted twice)."""
    return estimate(artifact.model, RunSettings.from_cmd(artifact.cmd or ())).ram


def _tensor_types(artifact: Artifact) -> dict[str, str]:
    counts: Counter[str] = Counter()
    for path in artifact.subject.facts.paths:
        counts.update(t.ggml_type for t in read_header(path).tensors)
    return {kind: str(count) for kind, count in sorted(counts.items())}


def _metadata(values: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: f"{value.type}[{value.length}]" if isinstance(value, ArraySummary) else repr(value)
        for key, value in values.items()
    }


def _mapping(group: str, a: Mapping[str, str], b: Mapping[str, str]) -> list[Change]:
    return [
        Change(f"{group} {key}", a.get(key), b.get(key))
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    ]


def _delta(before: int, after: int, show: Any) -> str:
    change = after - before
    sign = "+" if change > 0 else "-"
    percent = f" ({sign}{abs(change) / before * 100:.1f} %)" if before else ""
    return f"{sign}{show(abs(change))}{percent}"
