"""model.yaml's ``quality`` section as a typed record: the reference, the corpus, the settings
and each threshold (per build variant) with the YAML line it was written on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import Location
from harness.quality import DEFAULT_CORPUS, QualitySettings

from ._expectations import NumberExpectation
from ._yaml import DataPath, Located

__all__ = ["QualitySection", "Reference", "Threshold", "quality_section"]


@dataclass(frozen=True)
class Reference:
    """What a variant is compared with: ``stage`` of its own Packerfile, a ``gguf`` file
    (relative to model.yaml) or an ``image`` (a layout DIR[:TAG] or a reference)."""

    kind: Literal["stage", "gguf", "image"]
    value: str
    location: Location


@dataclass(frozen=True)
class Threshold:
    """One test: a metric of ``harness.quality.METRICS`` and its bounds."""

    metric: str
    bound: NumberExpectation
    location: Location

    def to_json(self) -> dict[str, Any]:
        return self.bound.to_json()


@dataclass(frozen=True)
class QualitySection:
    kind: Literal["perplexity", "embedding"]
    reference: Reference
    corpus: Path  # the harness's own when model.yaml names none
    sentences: tuple[str, ...]  # embedding: given, else the corpus's non-empty lines
    settings: QualitySettings
    thresholds: Mapping[str, Threshold]  # by metric, in YAML order
    variants: Mapping[str, Mapping[str, Threshold]]  # variant name -> its replacements
    expect_failure: Mapping[str, str]  # variant name -> why it must fail
    location: Location
    corpus_location: Location
    doc: Located = field(repr=False, compare=False)

    def threshold(self, metric: str, variant: str | None) -> Threshold:
        """The bound that applies to ``metric`` for a build variant (None: the plain build)."""
        return self.variants.get(variant or "", {}).get(metric) or self.thresholds[metric]

    def expected_failure(self, variant: str | None) -> str | None:
        return self.expect_failure.get(variant or "")


def quality_section(doc: Located, raw: Mapping[str, Any]) -> QualitySection:
    kind = raw.get("kind", "perplexity")
    ((ref_kind, ref_value),) = raw["reference"].items()
    reference = Reference(ref_kind, str(ref_value), doc.key_location(("quality", "reference")))
    base = Path(doc.path).parent if doc.path else Path()
    corpus = base / raw["corpus"] if "corpus" in raw else DEFAULT_CORPUS
    corpus_location = doc.key_location(("quality", "corpus" if "corpus" in raw else "reference"))
    thresholds = _thresholds(doc, ("quality", "thresholds"), raw["thresholds"])
    variants: dict[str, Mapping[str, Threshold]] = {}
    failures: dict[str, str] = {}
    # names, metrics and kinds were checked with the rest of the file (_semantic)
    for name, entry in (raw.get("variants") or {}).items():
        path: DataPath = ("quality", "variants", name, "thresholds")
        variants[name] = _thresholds(doc, path, entry.get("thresholds") or {})
        if "expect_failure" in entry:
            failures[name] = str(entry["expect_failure"])
    sentences = tuple(str(s) for s in raw.get("sentences") or ())
    return QualitySection(
        kind=kind,
        reference=reference,
        corpus=corpus,
        sentences=sentences,
        settings=QualitySettings(ctx_size=int(raw.get("ctx_size", 512)), chunks=raw.get("chunks")),
        thresholds=thresholds,
        variants=variants,
        expect_failure=failures,
        location=doc.key_location(("quality",)),
        corpus_location=corpus_location,
        doc=doc,
    )


def _thresholds(doc: Located, path: DataPath, raw: Mapping[str, Any]) -> dict[str, Threshold]:
    return {
        metric: Threshold(
            metric,
            NumberExpectation(min=bound.get("min"), max=bound.get("max")),
            doc.key_location((*path, metric)),
        )
        for metric, bound in raw.items()
    }
