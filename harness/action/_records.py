"""The JSON report (``--harness-report``, harness/report.py) read back as typed records.

The report is read leniently: it may come from another harness version or a run that stopped
early, so a missing or odd field becomes a default instead of an exception. Two things the
report format leaves open are settled here:

- **Digests** of a model's images: what ``gguf-harness test --publish`` records,
  ``model["publish"] = {"published": bool, "reason": str | None, "items": [{"reference",
  "digest", "format", ...}]}``; also read: ``model["digests"]`` as ``{reference: digest}`` or a
  list of ``{"reference", "digest"}``, and ``model["digest"]`` as one string.
- **Locations**: ``item["location"]`` is ``PATH:LINE`` (model.yaml, relative to where the
  harness ran); ``path``/``line`` split it.
- **Quality**: ``model["quality"]`` (harness/pipeline/_quality.py's ``QualityRun.to_json()``)
  is kept only with a ``metrics`` mapping; metrics that are not numbers are dropped.

Several reports (one per matrix cell) read together are one Run: ``load_reports``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from harness.errors import UsageError

__all__ = [
    "Change",
    "Diff",
    "Item",
    "Model",
    "Quality",
    "Run",
    "load_report",
    "load_reports",
    "parse_report",
]

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Item:
    """One check of one model, as the report recorded it."""

    id: str
    section: str  # expect | memory | smoke | publish | ...
    name: str  # architecture, metadata::general.name, a budget's or smoke check's name
    outcome: str  # passed | failed | skipped | xfailed | error
    path: str | None  # model.yaml, relative to where the harness ran
    line: int | None
    duration: float = 0.0
    expected: Any = None
    actual: Any = None
    message: str = ""

    @property
    def label(self) -> str:
        """``expect.metadata.general.name``: the check as the YAML nests it."""
        return ".".join([self.section, *self.name.split("::")])

    @property
    def location(self) -> str:
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}" if self.line else self.path

    @property
    def ok(self) -> bool:
        return self.outcome == "passed"


@dataclass(frozen=True)
class Change:
    """One difference from the published model to this build (``gguf-harness diff``'s)."""

    what: str  # "size", "BPW", "RAM", "tensors Q4_K", "metadata general.name"
    before: str | None  # None: absent in the published model
    after: str | None
    delta: str | None = None  # "-3.00 MiB (-3.1 %)"


@dataclass(frozen=True)
class Diff:
    """This build against the tag its model.yaml publishes to (``--diff-published``)."""

    reference: str
    state: str  # changed | same | first publication | unavailable
    headline: str  # "size -3.00 MiB (-3.1 %), RAM +120.00 MiB (+4.0 %)"
    note: str = ""
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class Quality:
    """The model measured against its quality reference: one rung of its quant ladder."""

    reference: str  # as model.yaml names it: "stage reference", a path, an image
    variant: str | None  # the build variant (None: the plain build)
    kind: str  # perplexity | embedding
    metrics: Mapping[str, float]  # by harness.quality.METRICS name
    size: int | None = None  # bytes on disk
    bpw: float | None = None
    file_type: str = ""


@dataclass(frozen=True)
class Model:
    path: str
    name: str
    passed: bool
    items: tuple[Item, ...]
    digests: Mapping[str, str] = field(default_factory=dict)  # reference (or "image") -> digest
    published: bool | None = None  # None: publishing was not asked for
    publish_note: str = ""  # why nothing was published
    diff: Diff | None = None
    quality: Quality | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for item in self.items if item.outcome == outcome)

    def section(self, name: str) -> list[Item]:
        return [item for item in self.items if item.section == name]


@dataclass(frozen=True)
class Run:
    passed: bool
    harness: str
    models: tuple[Model, ...]

    @property
    def failed_models(self) -> list[Model]:
        return [model for model in self.models if not model.passed]

    def digests(self) -> dict[str, dict[str, str]]:
        """model name -> {reference: digest}, models without digests left out."""
        return {m.name: dict(m.digests) for m in self.models if m.digests}


def load_report(path: str | os.PathLike[str]) -> Run:
    """Read the report at ``path``; UsageError when it is missing or not a report."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise UsageError(f"no report at {os.fspath(path)}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the report {os.fspath(path)}: {exc}") from None
    if not isinstance(data, Mapping):
        raise UsageError(f"{os.fspath(path)} is not a gguf-harness report")
    return parse_report(data)


def load_reports(paths: Sequence[str | os.PathLike[str]]) -> Run:
    """Several reports (one per matrix cell) as one Run: their models in the order given."""
    runs = [load_report(path) for path in paths]
    if len(runs) == 1:
        return runs[0]
    models = tuple(model for run in runs for model in run.models)
    passed = bool(models) and all(run.passed for run in runs)
    return Run(passed, next((run.harness for run in runs if run.harness), ""), models)


def parse_report(data: Mapping[str, Any]) -> Run:
    models = tuple(_model(m) for m in data.get("models") or [] if isinstance(m, Mapping))
    passed = data.get("passed")
    if not isinstance(passed, bool):
        passed = bool(models) and all(m.passed for m in models)
    return Run(passed, str(data.get("harness") or ""), models)


def _model(raw: Mapping[str, Any]) -> Model:
    items = tuple(_item(i) for i in raw.get("items") or [] if isinstance(i, Mapping))
    passed = raw.get("passed")
    if not isinstance(passed, bool):
        passed = bool(items) and all(i.ok or i.outcome == "xfailed" for i in items)
    path = str(raw.get("path") or "")
    name = str(raw.get("name") or path)
    publish = raw.get("publish")
    published, note = None, ""
    if isinstance(publish, Mapping):
        published = bool(publish.get("published"))
        note = str(publish.get("reason") or "")
    digests, diff = _digests(raw), _diff(raw)
    return Model(path, name, passed, items, digests, published, note, diff, _quality(raw))


def _quality(raw: Mapping[str, Any]) -> Quality | None:
    data = raw.get("quality")
    if not isinstance(data, Mapping) or not isinstance(data.get("metrics"), Mapping):
        return None
    metrics = {str(k): float(v) for k, v in data["metrics"].items() if _is_number(v)}
    size, bpw = data.get("size"), data.get("bpw")
    return Quality(
        reference=str(data.get("reference") or ""),
        variant=_text(data.get("variant")) or None,
        kind=str(data.get("kind") or ("embedding" if "cosine_mean" in metrics else "perplexity")),
        metrics=metrics,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        bpw=float(bpw) if _is_number(bpw) else None,
        file_type=str(data.get("file_type") or ""),
    )


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _diff(raw: Mapping[str, Any]) -> Diff | None:
    data = raw.get("diff")
    if not isinstance(data, Mapping) or not data.get("reference"):
        return None
    changes = tuple(
        Change(
            str(c.get("what") or ""),
            _text(c.get("before")),
            _text(c.get("after")),
            _text(c.get("delta")),
        )
        for c in data.get("changes") or []
        if isinstance(c, Mapping)
    )
    state = str(data.get("state") or "")
    note = str(data.get("note") or "")
    return Diff(str(data["reference"]), state, str(data.get("headline") or note), note, changes)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _item(raw: Mapping[str, Any]) -> Item:
    path, line = _split_location(str(raw.get("location") or ""))
    duration = raw.get("duration")
    return Item(
        id=str(raw.get("id") or ""),
        section=str(raw.get("section") or ""),
        name=str(raw.get("name") or ""),
        outcome=str(raw.get("outcome") or "error"),
        path=path,
        line=line,
        duration=float(duration) if isinstance(duration, int | float) else 0.0,
        expected=raw.get("expected"),
        actual=raw.get("actual"),
        message=str(raw.get("message") or ""),
    )


def _split_location(text: str) -> tuple[str | None, int | None]:
    if not text:
        return None, None
    path, colon, line = text.rpartition(":")
    if colon and line.isdigit():
        return path, int(line) or None
    return text, None


def _digests(raw: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    publish = raw.get("publish")
    if isinstance(publish, Mapping) and isinstance(publish.get("items"), list):
        for entry in publish["items"]:
            _add_entry(found, entry)
    listed = raw.get("digests")
    if isinstance(listed, Mapping):
        found.update({str(k): v for k, v in listed.items() if _is_digest(v)})
    elif isinstance(listed, list):
        for entry in listed:
            _add_entry(found, entry)
    if _is_digest(raw.get("digest")):
        found.setdefault("image", raw["digest"])
    return found


def _add_entry(found: dict[str, str], entry: Any) -> None:
    if isinstance(entry, Mapping) and _is_digest(entry.get("digest")):
        found[str(entry.get("reference") or "image")] = entry["digest"]


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and bool(_DIGEST.match(value))
