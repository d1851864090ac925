"""One model's chain, run at most once per session and shared by all of its checks.

Producing the artifact — building the image from the model's Packerfile, or reading an already
built GGUF or image — is the expensive part. Each model's result, or the one error that stopped
it, is kept so that every check of the model sees the same artifact or fails with the same cause.
"""

from __future__ import annotations

from ._artifact import (
    MODEL_FORMS,
    Artifact,
    artifact_of_layout,
    artifact_of_stored,
    model_build_options,
    produce_artifact,
    resolve_artifact,
)
from ._checks import (
    check_memory,
    early_template_warnings,
    estimated_ram,
    lint_model,
    run_record,
    run_smoke,
    template_warning,
    warn_at,
)
from ._diff import Change, ModelDiff, diff_models
from ._publish import (
    DEFAULT_PUBLISH_TARGET,
    publish_all,
    publish_gated,
    publish_model,
    publish_target,
)
from ._published import PublishedDiff, diff_all_published, diff_published
from ._quality import (
    QualityRun,
    QualityVerdict,
    judge_quality,
    measure_quality,
    reference_model,
)
from ._scaffold import MARGIN, init_model
from ._session import Pipeline

__all__ = [
    "DEFAULT_PUBLISH_TARGET",
    "MARGIN",
    "MODEL_FORMS",
    "Artifact",
    "Change",
    "ModelDiff",
    "Pipeline",
    "PublishedDiff",
    "QualityRun",
    "QualityVerdict",
    "artifact_of_layout",
    "artifact_of_stored",
    "check_memory",
    "diff_all_published",
    "diff_models",
    "diff_published",
    "early_template_warnings",
    "estimated_ram",
    "init_model",
    "judge_quality",
    "lint_model",
    "measure_quality",
    "model_build_options",
    "produce_artifact",
    "publish_all",
    "publish_gated",
    "publish_model",
    "publish_target",
    "reference_model",
    "resolve_artifact",
    "run_record",
    "run_smoke",
    "template_warning",
    "warn_at",
]
