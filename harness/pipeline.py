"""One model's chain, run at most once per session and shared by all of its checks.

Producing the artifact (reading a GGUF today; building, estimating and smoke-testing as those
stages land) is the expensive part. Each model's result, or the one error that stopped it, is kept
so that every check of the model sees the same artifact or fails with the same clear cause.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import ArtifactError, HarnessError
from harness.expect import ModelSpec, Subject
from harness.gguf import read_facts

__all__ = ["Pipeline", "produce_subject"]


def produce_subject(spec: ModelSpec) -> Subject:
    """The thing a model's expectations are checked against."""
    source = spec.source
    if source is None:
        raise ArtifactError(
            "no `source:` given, and building from a Packerfile is not available in this "
            "version of gguf-harness; point `source.gguf` at a built file",
            spec.location,
        )
    base = spec.context_dir(source.from_) if source.from_ else spec.path.parent
    if source.gguf is not None:
        path = Path(base, source.gguf)
        if not path.is_file():
            raise ArtifactError(f"source.gguf: no such file: {path}", source.location)
        return Subject(facts=read_facts(path), labels=None)
    raise ArtifactError("source.image: reading images is not available yet", source.location)


class Pipeline:
    """Caches each model's subject (or the error that prevented it) by model file."""

    def __init__(self) -> None:
        self._subjects: dict[Path, Subject | HarnessError] = {}

    def subject(self, spec: ModelSpec) -> Subject:
        key = Path(spec.path).resolve()
        if key not in self._subjects:
            try:
                self._subjects[key] = produce_subject(spec)
            except HarnessError as error:
                self._subjects[key] = error
        outcome = self._subjects[key]
        if isinstance(outcome, HarnessError):
            raise outcome
        return outcome
