"""Failures as annotations on the model.yaml line that declared them.

Two consumers: workflow commands (``::error file=...,line=...::message`` on stdout), of which
GitHub shows only 10 errors per step, and a check run, which takes any number in batches of
50. ``annotations`` orders them most important first: each failing model's first problem,
then the rest; within that, a check that ran and did not hold before one that could not run,
models in report order. When a model's artifact could not be produced
every check of it errors with the same message; those collapse into one annotation.
"""

# No `from __future__ import annotations`: this module defines a function of that name.
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.action._records import Item, Run, parse_report

__all__ = ["STEP_LIMIT", "Annotation", "annotations", "check_run_annotations", "workflow_commands"]

STEP_LIMIT = 10  # error annotations GitHub shows per step
_LEVELS = {"error": "failure", "warning": "warning", "notice": "notice"}
_MESSAGE = 4000  # a check run annotation's message may be 64 KiB; a line of log less


@dataclass(frozen=True)
class Annotation:
    level: str  # error | warning | notice
    path: str  # relative to the repository root
    line: int
    title: str
    message: str

    def command(self) -> str:
        """The workflow command GitHub turns into an annotation."""
        props = f"file={_prop(self.path)},line={self.line},title={_prop(self.title)}"
        return f"::{self.level} {props}::{_data(self.message)}"

    def for_check_run(self) -> dict[str, str | int]:
        """The Checks API's annotation object."""
        return {
            "path": self.path,
            "start_line": self.line,
            "end_line": self.line,
            "annotation_level": _LEVELS[self.level],
            "title": self.title[:255],
            "message": self.message[:_MESSAGE],
        }


def annotations(
    report: Run | Mapping[str, Any],
    *,
    root: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> list[Annotation]:
    """Every failed or errored check as an annotation, most important first.

    Report paths are relative to where the harness ran (``cwd``, default the current
    directory); annotations need them relative to the repository (``root``, default ``cwd``).
    """
    run = report if isinstance(report, Run) else parse_report(report)
    base = Path(cwd or os.getcwd())
    found: list[tuple[tuple[int, int, int], Annotation]] = []
    for number, model in enumerate(run.models):
        ranked: list[tuple[int, Annotation]] = []
        errors: dict[str, list[Item]] = {}  # one message, the checks that stopped on it
        for item in model.items:
            if item.outcome == "failed":
                title = f"{model.name}: {item.label}"
                ranked.append((0, _annotation(item, model.path, title, base, root)))
            elif item.outcome == "error":
                errors.setdefault(item.message, []).append(item)
        for items in errors.values():
            more = f" (+{len(items) - 1} more checks)" if len(items) > 1 else ""
            title = f"{model.name}: {items[0].label}{more}"
            ranked.append((1, _annotation(items[0], model.path, title, base, root)))
        ranked.sort(key=lambda entry: entry[0])
        # Every failing model's first problem before any model's second: with 10 shown per
        # step, one model's long list must not hide that another failed too.
        found += [((i > 0, rank, number), a) for i, (rank, a) in enumerate(ranked)]
    found.sort(key=lambda entry: entry[0])
    return [annotation for _key, annotation in found]


def workflow_commands(found: Sequence[Annotation], limit: int = STEP_LIMIT) -> list[str]:
    """The lines to print: the first ``limit`` annotations, and a notice of how many were not."""
    lines = [annotation.command() for annotation in found[:limit]]
    if len(found) > limit:
        left = len(found) - limit
        lines.append(
            f"::notice title=gguf-harness::{left} more failure{'s' if left != 1 else ''} not "
            "annotated here (GitHub shows 10 per step); see the job summary or the check run"
        )
    return lines


def check_run_annotations(
    found: Sequence[Annotation], size: int = 50
) -> list[list[dict[str, Any]]]:
    """The Checks API's annotation objects in batches of ``size`` (its limit per request)."""
    objects = [annotation.for_check_run() for annotation in found]
    return [objects[i : i + size] for i in range(0, len(objects), size)]


def _message(item: Item) -> str:
    if item.outcome == "error":
        return f"could not be checked: {item.message}"
    return item.message or f"{item.label} did not hold"


def _annotation(
    item: Item, model_path: str, title: str, cwd: Path, root: str | os.PathLike[str] | None
) -> Annotation:
    path = _repo_path(item.path or model_path, cwd, root)
    return Annotation("error", path, item.line or 1, title, _message(item))


def _repo_path(path: str, cwd: Path, root: str | os.PathLike[str] | None) -> str:
    absolute = Path(path) if Path(path).is_absolute() else cwd / path
    if root is None:
        root = cwd
    try:
        return Path(os.path.relpath(absolute, root)).as_posix()
    except ValueError:  # another drive
        return absolute.as_posix()


def _data(text: str) -> str:
    # The workflow command escapes: a message may span lines but is one command line.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
