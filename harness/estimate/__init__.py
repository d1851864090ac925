"""How much memory llama-server needs for a model, per device, modelled the way llama.cpp
allocates it (see docs/memory-model.md), and whether that fits a machine.

``estimate`` gives weights, KV cache, compute and other buffers for the host and each GPU;
``max_context`` the largest context that fits a ``Budget``; ``check_budget`` /
``evaluate_budget`` the verdict for a model.yaml budget. ``measure`` loads the model through
llama.cpp itself (llama-cpp-python, CPU) and reads the buffer sizes it reports: the ground truth
the estimator is tested against.
"""

from __future__ import annotations

from ._budget import Budget, BudgetCheck, BudgetResult, check_budget, evaluate_budget, max_context
from ._estimate import GPU_OVERHEAD, ModelSource, estimate, load_model
from ._fidelity import COMPONENTS, Comparison, compare
from ._measure import Measured, measure, measure_server
from ._model import ModelInfo, model_info, model_info_from_seed
from ._placement import DeviceSpec
from ._records import DeviceEstimate, Estimate
from ._request import EstimateRun, estimate_run, machine_of
from ._settings import CACHE_TYPES, SPLIT_MODES, RunSettings

__all__ = [
    "CACHE_TYPES",
    "COMPONENTS",
    "GPU_OVERHEAD",
    "SPLIT_MODES",
    "Budget",
    "BudgetCheck",
    "BudgetResult",
    "Comparison",
    "DeviceEstimate",
    "DeviceSpec",
    "Estimate",
    "EstimateRun",
    "Measured",
    "ModelInfo",
    "ModelSource",
    "RunSettings",
    "check_budget",
    "compare",
    "estimate",
    "estimate_run",
    "evaluate_budget",
    "load_model",
    "machine_of",
    "max_context",
    "measure",
    "measure_server",
    "model_info",
    "model_info_from_seed",
]
