"""Spreading a repository's models over runners: a ``strategy.matrix`` and the cell selector.

``matrix(paths)`` is the JSON a workflow feeds to ``strategy.matrix`` (``fromJSON``), one
``include`` entry per model and variant; each entry's ``only`` is what ``select`` (behind
``gguf-harness test --only``) takes to run that one cell.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError

from ._load import load_spec
from ._records import ModelSpec, Variant

__all__ = ["MODEL_FILES", "Selected", "find_model_files", "matrix", "parse_only", "select"]

MODEL_FILES = ("model.yaml", "*.model.yaml")  # the pytest plugin's default patterns


@dataclass(frozen=True)
class Selected:
    """One matrix cell: a model, and one of its variants (None: the plain build)."""

    spec: ModelSpec
    variant: Variant | None


def find_model_files(
    paths: Iterable[str | os.PathLike[str]], patterns: Sequence[str] = MODEL_FILES
) -> list[Path]:
    """The model files under ``paths`` (files, directories or glob patterns), sorted, once each.

    Hidden directories (``.git``, ``.venv``) are not searched.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        text = os.fspath(raw)
        matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))] or [Path(text)]
        for path in matches:
            if path.is_file():
                found[path] = None
            elif path.is_dir():
                found.update(dict.fromkeys(_walk(path, patterns)))
            else:
                raise UsageError(f"no such file or directory: {text}")
    return sorted(found)


def _walk(root: Path, patterns: Sequence[str]) -> list[Path]:
    hits = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        hits += [Path(directory, n) for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    return hits


def matrix(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
    """``{"include": [{"model": DIR, "file": YAML, "name": NAME, "variant": V, "only": ...}]}``.

    A model without variants is one entry with ``variant: ""``. Raises the model file's
    SpecErrors when one does not load, UsageError when two models share a name.
    """
    include: list[dict[str, str]] = []
    names: dict[str, Path] = {}
    for path in find_model_files(paths):
        spec = load_spec(path)
        if spec.name in names:
            raise UsageError(f"two models are named {spec.name!r}: {names[spec.name]} and {path}")
        names[spec.name] = path
        for variant in spec.build.variants or (None,):
            name = variant.name if variant else ""
            include.append(
                {
                    "model": path.parent.as_posix(),
                    "file": path.as_posix(),
                    "name": spec.name,
                    "variant": name,
                    "only": f"{spec.name}:{name}" if name else spec.name,
                }
            )
    return {"include": include}


def parse_only(text: str) -> tuple[str, str | None]:
    """``NAME[:VARIANT]`` -> (name, variant or None)."""
    name, colon, variant = text.strip().partition(":")
    if not name or (colon and not variant):
        raise UsageError(f"--only takes NAME or NAME:VARIANT, not {text!r}")
    return name, variant if colon else None


def select(specs: Iterable[ModelSpec], only: str) -> list[Selected]:
    """The cells ``only`` (``NAME[:VARIANT]``) names: one model, one or all of its variants.

    ``NAME`` matches a model's name or its directory's name. Without ``:VARIANT`` a model with
    variants gives all of them. UsageError, listing what there is, when nothing matches.
    """
    name, variant = parse_only(only)
    specs = list(specs)
    models = [s for s in specs if name in (s.name, s.directory.name)]
    if not models:
        known = ", ".join(sorted(s.name for s in specs)) or "none"
        raise UsageError(f"--only {only}: no model named {name!r} (models: {known})")
    chosen: list[Selected] = []
    for spec in models:
        variants = spec.build.variants
        if variant is None:
            chosen += [Selected(spec, v) for v in variants] or [Selected(spec, None)]
            continue
        matching = [v for v in variants if v.name == variant]
        if not matching:
            known = ", ".join(v.name for v in variants) or "none"
            raise UsageError(
                f"--only {only}: {spec.name} has no variant {variant!r} (variants: {known})"
            )
        chosen.append(Selected(spec, matching[0]))
    return chosen
