"""Publishing tested models: the seed's image, a CNCF ModelPack artifact, a Docker Model Runner
model, with the test results as annotations and the JSON report as an OCI referrer.

``publish(layout, spec, evidence)`` pushes only when ``evidence.passed``; the same model
published again sends no blob and no manifest. ``Evidence.from_report`` reads the harness's
JSON report. ``validate_modelpack_config`` checks a config against the schema shipped here.
"""

from harness.errors import PublishError

from ._dmr import DMR_CONFIG, dmr_artifact, dmr_config
from ._evidence import PREFIX, Evidence
from ._facts import ModelFacts, model_facts, param_size
from ._files import ImageFiles, ModelFile, extract_files
from ._modelpack import (
    MODELPACK_ARTIFACT_TYPE,
    MODELPACK_CONFIG,
    modelpack_artifact,
    modelpack_config,
    validate_modelpack_config,
)
from ._publish import REPORT_ARTIFACT_TYPE, publish
from ._seed_image import seed_artifact
from ._spec import FORMATS, Published, PublishResult, PublishSpec, tag_for

__all__ = [
    "DMR_CONFIG",
    "FORMATS",
    "MODELPACK_ARTIFACT_TYPE",
    "MODELPACK_CONFIG",
    "PREFIX",
    "REPORT_ARTIFACT_TYPE",
    "Evidence",
    "ImageFiles",
    "ModelFacts",
    "ModelFile",
    "PublishError",
    "PublishResult",
    "PublishSpec",
    "Published",
    "dmr_artifact",
    "dmr_config",
    "extract_files",
    "model_facts",
    "modelpack_artifact",
    "modelpack_config",
    "param_size",
    "publish",
    "seed_artifact",
    "tag_for",
    "validate_modelpack_config",
]
