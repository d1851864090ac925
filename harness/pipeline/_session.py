"""One session's models: each model's artifact and smoke run produced at most once, shared by
all of its checks (or the one error that stopped it, so every check fails with the same cause)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from harness.errors import HarnessError, UsageError
from harness.expect import ModelSpec, Subject, Variant, select
from harness.smoke import SmokeRun

from ._artifact import Artifact, produce_artifact
from ._checks import run_smoke
from ._quality import QualityRun, measure_quality

T = TypeVar("T")


class Pipeline:
    """Caches each model's artifact (or the error that prevented it) by model file."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        # The build variant chosen for a model (`test --only NAME:VARIANT`), by model file.
        self.variants: dict[Path, Variant] = {}
        self._artifacts: dict[Path, Artifact | HarnessError] = {}
        self._smoke: dict[Path, SmokeRun | HarnessError] = {}
        self._quality: dict[Path, QualityRun | HarnessError] = {}

    def select(self, specs: Iterable[ModelSpec], only: str) -> set[str]:
        """The model files ``only`` (``NAME[:VARIANT]``, a cell of ``matrix``) names; the chosen
        variant of each is what this session builds. UsageError when it names nothing or
        several variants of one model."""
        chosen = select(specs, only)
        for selected in chosen:
            if selected.variant is not None:
                key = Path(selected.spec.path).resolve()
                if key in self.variants:
                    raise UsageError(f"--only {only}: pick one variant of {selected.spec.name}")
                self.variants[key] = selected.variant
        return {str(selected.spec.path) for selected in chosen}

    def artifact(self, spec: ModelSpec) -> Artifact:
        return _once(self._artifacts, spec, lambda key: produce_artifact(
            spec, self.out_dir, self.variants.get(key)
        ))  # fmt: skip

    def produced(self, spec: ModelSpec) -> Artifact | None:
        """The model's artifact if this session produced one; never starts producing it."""
        outcome = self._artifacts.get(Path(spec.path).resolve())
        return outcome if isinstance(outcome, Artifact) else None

    def smoke(self, spec: ModelSpec) -> SmokeRun:
        """The model's smoke run: one server, all of its checks, done once."""
        return _once(self._smoke, spec, lambda _key: run_smoke(spec, self.artifact(spec)))

    def quality(self, spec: ModelSpec) -> QualityRun:
        """The model measured against its ``quality`` reference, once for all its thresholds."""
        return _once(self._quality, spec, lambda key: measure_quality(
            spec, self.artifact(spec), self.out_dir, self.variants.get(key)
        ))  # fmt: skip

    def variant(self, spec: ModelSpec) -> Variant | None:
        """The build variant this session checks of ``spec`` (None: its plain build)."""
        return self.variants.get(Path(spec.path).resolve())

    def subject(self, spec: ModelSpec) -> Subject:
        return self.artifact(spec).subject


def _once(table: dict[Path, T | HarnessError], spec: ModelSpec, make: Callable[[Path], T]) -> T:
    """``make``'s result for ``spec``'s model, made once a session; its error, raised again to
    every later caller, so every check of a model fails with the one cause."""
    key = Path(spec.path).resolve()
    if key not in table:
        try:
            table[key] = make(key)
        except HarnessError as error:
            table[key] = error
    outcome = table[key]
    if isinstance(outcome, HarnessError):
        raise outcome
    return outcome
