"""The test results that travel with a published model, as annotations under our own prefix.

Only facts that are the same on every run of the same model go into annotations (which checks
passed, the llama.cpp build, the memory estimates, the smoke outcome), so an unchanged model
republished gives byte-identical manifests and uploads nothing. The full JSON report, with its
timings, is attached separately as an OCI referrer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness import __version__
from harness.oci import LABEL_PREFIX
from harness.quality import HEADLINE

__all__ = ["PREFIX", "Evidence"]

PREFIX = LABEL_PREFIX
_KEY_PART = re.compile(r"[^a-z0-9.-]+")


@dataclass(frozen=True)
class Evidence:
    """What the harness found about one model; ``passed`` gates publishing."""

    passed: bool
    checks: int = 0  # items that ran
    failures: tuple[str, ...] = ()  # ids of the items that did not pass
    llama_cpp: str | None = None  # the llama.cpp build the model was validated with
    memory: Mapping[str, str] = field(default_factory=dict)  # budget -> estimate
    smoke: str | None = None  # "passed", "failed" or "skipped"
    quality: Mapping[str, str] = field(default_factory=dict)  # metric -> value, vs reference
    report: bytes | None = None  # the full JSON report, attached as a referrer

    def annotations(self) -> dict[str, str]:
        """The manifest annotations for these results (sorted, deterministic)."""
        found = {
            PREFIX + "tests.passed": "true" if self.passed else "false",
            PREFIX + "tests.checks": str(self.checks),
            PREFIX + "harness.version": __version__,
        }
        if self.llama_cpp:
            found[PREFIX + "llama-cpp"] = self.llama_cpp
        if self.smoke:
            found[PREFIX + "smoke"] = self.smoke
        for metric, value in self.quality.items():
            found[PREFIX + "quality." + metric.replace("_", "-")] = value
        for budget, estimate in self.memory.items():
            key = _KEY_PART.sub("-", budget.lower()).strip("-") or "default"
            found[PREFIX + "memory." + key] = estimate
        return dict(sorted(found.items()))

    @classmethod
    def from_report(
        cls, report: Mapping[str, Any], model: str, raw: bytes | None = None
    ) -> Evidence:
        """Evidence for ``model`` (its model.yaml path or name) from ``harness.report``'s JSON.

        Items of the ``memory`` section give the estimates (name -> measured value), the
        ``smoke`` section the smoke outcome; every item must have passed.
        """
        records = [
            m
            for m in report.get("models") or []
            if isinstance(m, Mapping) and model in (m.get("path"), m.get("name"))
        ]
        items = [i for m in records for i in m.get("items") or [] if isinstance(i, Mapping)]
        failures = tuple(str(i.get("id")) for i in items if i.get("outcome") != "passed")
        # The item's one-line verdict ("gpu-2gib: fits: GPU0 804.55 MiB of 2048.00 MiB ..."):
        # short enough for an annotation, and a function of the model alone.
        memory = {
            str(i.get("name")): str(i.get("message"))
            for i in items
            if i.get("section") == "memory" and i.get("message")
        }
        smoke_items = [i for i in items if i.get("section") == "smoke"]
        smoke = None
        if smoke_items:
            outcomes = {i.get("outcome") for i in smoke_items}
            smoke = "passed" if outcomes == {"passed"} else "failed"
        quality = next((m.get("quality") for m in records if m.get("quality")), None)
        return cls(
            passed=bool(items) and not failures,
            checks=len(items),
            failures=failures,
            memory=memory,
            smoke=smoke,
            quality=_quality(quality),
            report=raw,
        )


def _quality(record: Any) -> dict[str, str]:
    if not isinstance(record, Mapping) or not isinstance(record.get("metrics"), Mapping):
        return {}
    metrics = record["metrics"]
    found = {k: f"{metrics[k]:g}" for k in HEADLINE if isinstance(metrics.get(k), (int, float))}
    if found and isinstance(record.get("reference"), str):
        found["reference"] = record["reference"]
    return found
