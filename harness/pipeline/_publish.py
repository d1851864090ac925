"""The publish gate: a model is published only when every one of its collected checks ran and
passed in this run."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.expect import ModelSpec, Variant
from harness.publish import Evidence, PublishResult, PublishSpec, publish
from harness.report import ModelRecord, Report
from harness.toolchain import llama_cpp_build

from ._artifact import Artifact

if TYPE_CHECKING:
    from ._session import Pipeline

# Where the main job publishes when model.yaml names no registry (one OCI layout per model
# below it): no outside service needed.
DEFAULT_PUBLISH_TARGET = "oci:out/published"


def publish_model(
    spec: ModelSpec, artifact: Artifact, report: Mapping[str, Any], raw_report: bytes
) -> PublishResult:
    """Publish one model's image if every one of its checks in ``report`` passed."""
    if artifact.image is None:
        what = "a registry image" if artifact.stored is not None else "a bare GGUF"
        return PublishResult(False, f"not published: its source is {what}, not a build")
    target = publish_target(spec, artifact)
    evidence = Evidence.from_report(report, str(spec.path), raw_report)
    evidence = replace(evidence, llama_cpp=llama_cpp_build().label)
    return publish(artifact.image, target, evidence, tag=artifact.tag)


def publish_target(spec: ModelSpec, artifact: Artifact) -> PublishSpec:
    """Where ``artifact`` (a build of ``spec``) is published: model.yaml's ``publish:`` with its
    variant's tags, else ``$GGUF_HARNESS_REGISTRY/NAME``, else an OCI layout under
    DEFAULT_PUBLISH_TARGET."""
    name = Path(artifact.image).name if artifact.image else spec.name
    # A registry the Action (or the user) names for models whose model.yaml names none.
    registry = os.environ.get("GGUF_HARNESS_REGISTRY", "").rstrip("/")
    default = f"{registry}/{spec.name}" if registry else f"{DEFAULT_PUBLISH_TARGET}/{name}"
    return PublishSpec.from_section(
        spec.publish,
        spec.build.args_for(_variant_named(spec, artifact.tag)),
        default_target=default,
    )


def publish_gated(
    spec: ModelSpec,
    pipeline: Pipeline,
    record: ModelRecord,
    collected: Sequence[str],
    report: Mapping[str, Any],
    raw_report: bytes,
) -> bool:
    """The gate nobody bypasses by accident: publish ``spec``'s model only when every check
    ``collected`` for it ran in this run (-k, --deselect or -x leave some unrun) and passed (the
    report says); what happened goes on ``record.publish``. False if publishing itself failed."""
    ran = {item.id for item in record.items}
    unrun = [i for i in collected if i not in ran]
    if unrun:
        shown = ", ".join(i.split("::", 1)[-1] for i in unrun[:5])
        more = f" and {len(unrun) - 5} more" if len(unrun) > 5 else ""
        record.publish = {
            "published": False,
            "reason": f"not published: {len(unrun)} of its checks did not run ({shown}{more})",
        }
        return True
    try:
        result = publish_model(spec, pipeline.artifact(spec), report, raw_report)
    except HarnessError as error:
        record.publish = {"published": False, "reason": f"publishing failed: {error}"}
        return False
    record.publish = {
        "published": result.published,
        "reason": result.reason,
        "items": [asdict(item) for item in result.items],
    }
    return True


def publish_all(
    pipeline: Pipeline,
    report: Report,
    specs: Mapping[str, ModelSpec],
    collected: Mapping[str, Sequence[str]],
) -> bool:
    """Publish every model of ``report`` whose checks all ran and passed (``publish_gated``);
    False if a publish itself failed."""
    data = report.to_json()
    raw = json.dumps(data, indent=2, default=str).encode()
    ok = True
    for path, record in report.models.items():
        spec = specs.get(path)
        if spec is not None:
            ok = publish_gated(spec, pipeline, record, collected.get(path, []), data, raw) and ok
    return ok


def _variant_named(spec: ModelSpec, name: str | None) -> Variant | None:
    return next((v for v in spec.build.variants if v.name == name), None)
