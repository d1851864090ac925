"""The JSON report: per model, per item, what was expected, what was measured, and the outcome."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from harness import __version__
from harness._fs import atomic_write

__all__ = ["ItemRecord", "ModelRecord", "Report"]

REPORT_FORMAT = 1


@dataclass
class ItemRecord:
    """One pytest item's result, with the measured value rather than pass/fail alone."""

    id: str  # pytest node id, e.g. models/smollm2/model.yaml::expect::architecture
    section: str
    name: str
    location: str  # model.yaml:LINE
    outcome: str  # passed | failed | skipped | xfailed | error
    duration: float
    expected: Any = None
    actual: Any = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)  # held, but tests less than it seems


@dataclass
class ModelRecord:
    path: str
    name: str
    items: list[ItemRecord] = field(default_factory=list)
    # What publishing did: {"published": bool, "reason": ..., "items": [{reference, digest, ...}]}
    publish: dict[str, Any] | None = None
    # The smoke server's measured cost next to the estimator's figure for the same settings.
    run: dict[str, Any] | None = None
    # What the ``quality`` section measured against the reference (QualityRun.to_json()).
    quality: dict[str, Any] | None = None
    # This build against the tag it publishes to, before publishing (--diff-published):
    # {"reference", "state", "note", "headline", "changes": [{what, before, after, delta}]}.
    diff: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        # Whether the run passed (as pytest's exit status says): an xfail is expected. Publishing
        # asks more: every item passed (harness.publish.Evidence).
        return bool(self.items) and all(i.outcome in ("passed", "xfailed") for i in self.items)


class Report:
    """Collects item records during a run and writes them as one JSON document."""

    def __init__(self) -> None:
        self.models: dict[str, ModelRecord] = {}

    def model(self, path: str, name: str) -> ModelRecord:
        record = self.models.get(path)
        if record is None:
            record = self.models[path] = ModelRecord(path=path, name=name)
        return record

    def to_json(self) -> dict[str, Any]:
        models = []
        for record in self.models.values():
            entry = asdict(record)
            entry["passed"] = record.passed
            models.append(entry)
        return {
            "format": REPORT_FORMAT,
            "harness": __version__,
            "passed": bool(models) and all(m["passed"] for m in models),
            "models": models,
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        text = json.dumps(self.to_json(), indent=2, default=str) + "\n"
        atomic_write(path, text.encode())


def publish_lines(report: Report) -> list[str]:
    """Each build against the tag it publishes to (--diff-published), then what publishing
    did, a line per published item or per model it refused."""
    lines = [
        f"{model.name}: against {model.diff['reference']}: {model.diff['headline']}"
        for model in report.models.values()
        if model.diff is not None
    ]
    for model in report.models.values():
        if model.publish is None:
            continue
        for item in model.publish.get("items") or []:
            written = "written" if str(item["reference"]).startswith("oci:") else "pushed"
            state = written if item["changed"] else "unchanged"
            lines.append(f"{model.name}: {item['reference']} {item['digest']} ({state})")
        if not model.publish["published"]:
            lines.append(f"{model.name}: {model.publish['reason']}")
    return lines
