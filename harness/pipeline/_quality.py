"""The ``quality`` section: find the model's reference, measure the model against it.

The reference is resolved here because it may be another stage of the model's own Packerfile
(built with the same args, so every variant shares one reference build and, through the
quality cache, one reference pass), a GGUF beside model.yaml, or an image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.builder import build_with
from harness.errors import HarnessError, Location, QualityError, UsageError
from harness.expect import ModelSpec, QualitySection, Variant
from harness.quality import (
    METRICS,
    QualityStats,
    compare_embeddings,
    compare_perplexity,
    corpus_sentences,
)
from harness.store import Store
from harness.toolchain import parse_server_args

from ._artifact import (
    Artifact,
    artifact_of_result,
    artifact_of_stored,
    model_build_options,
    resolve_artifact,
)

__all__ = ["QualityRun", "QualityVerdict", "judge_quality", "measure_quality", "reference_model"]


@dataclass(frozen=True)
class QualityRun:
    """One model measured against its reference."""

    stats: QualityStats
    reference: str  # as model.yaml names it: "stage f16", a path, an image
    variant: str | None
    size: int  # the model's bytes on disk, for the ladder
    bpw: float
    file_type: str

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "variant": self.variant,
            "size": self.size,
            "bpw": round(self.bpw, 4),
            "file_type": self.file_type,
            **self.stats.to_json(),
        }


def measure_quality(
    spec: ModelSpec, artifact: Artifact, out_dir: Path, variant: Variant | None
) -> QualityRun:
    """The model's ``quality`` figures; QualityError at the YAML key whose input is at fault."""
    section = spec.quality
    assert section is not None
    reference = reference_model(spec, section, out_dir, variant)
    try:
        if section.kind == "perplexity":
            stats = compare_perplexity(artifact.model, reference, section.corpus, section.settings)
        else:
            stats = compare_embeddings(
                artifact.model,
                reference,
                section.sentences or corpus_sentences(section.corpus),
                pooling=_pooling(artifact),
                ctx_size=section.settings.ctx_size,
            )
    except QualityError as error:
        where = {"reference": section.reference.location, "corpus": section.corpus_location}
        raise QualityError(
            f"quality: {error.message}", where.get(error.part, section.location), part=error.part
        ) from None
    facts = artifact.subject.facts
    return QualityRun(
        stats,
        f"{section.reference.kind} {section.reference.value}",
        variant.name if variant else None,
        facts.file_size,
        facts.bpw,
        facts.file_type,
    )


def reference_model(
    spec: ModelSpec, section: QualitySection, out_dir: Path, variant: Variant | None
) -> Path:
    """The reference's GGUF file (the first shard of a split one)."""
    reference = section.reference
    try:
        if reference.kind == "gguf":
            path = spec.directory / reference.value
            if not path.is_file():
                raise QualityError(f"no such file: {path}")
            return path
        if reference.kind == "stage":
            output = out_dir / f"{spec.name}-{reference.value}"
            options = model_build_options(spec, output, variant)
            options = replace(options, target=reference.value, tag=reference.value)
            return artifact_of_result(build_with(options, declared=spec.build.builder)).model
        return _image(reference.value, out_dir).model
    except HarnessError as error:
        message = error.message if isinstance(error, QualityError) else str(error)
        raise QualityError(
            f"quality.reference ({reference.kind} {reference.value}): {message}",
            reference.location,
            part="reference",
        ) from None


def _image(text: str, out_dir: Path) -> Artifact:
    try:
        return resolve_artifact(text, out_dir)
    except UsageError:
        return artifact_of_stored(Store().pull(text))  # a registry reference, pulled once


def _pooling(artifact: Artifact) -> str:
    # The image's own --pooling: the vectors its server would give.
    found = parse_server_args(list(artifact.cmd or ())).last("--pooling")
    return found.value if found else ""


@dataclass(frozen=True)
class QualityVerdict:
    """One threshold of ``quality`` judged on a run."""

    passed: bool
    value: float
    expected: dict[str, Any]
    message: str
    location: Location  # the threshold that applied (the variant's own, if it has one)
    expected_failure: str | None  # why this variant must fail, when model.yaml says it must


def judge_quality(spec: ModelSpec, run: QualityRun, metric: str) -> QualityVerdict:
    """Whether ``metric`` of ``run`` lies within the bounds model.yaml sets for its variant."""
    section = spec.quality
    assert section is not None
    threshold = section.threshold(metric, run.variant)
    value = run.stats.metrics.get(metric)
    if value is None:
        raise QualityError(f"quality: nothing measured {metric}", threshold.location)
    unit = METRICS[metric].unit
    passed = threshold.bound.holds(value)
    verdict = "within" if passed else "outside"
    message = f"{metric} {value:g}{unit} {verdict} {threshold.bound.phrase()}{unit}"
    if run.variant:
        message += f" (variant {run.variant})"
    why = section.expected_failure(run.variant)
    return QualityVerdict(passed, value, threshold.to_json(), message, threshold.location, why)
