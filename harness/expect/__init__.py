"""model.yaml: load it with file:line:col for every problem, and evaluate its expectations.

``load_spec`` gives a :class:`ModelSpec` whose ``checks`` are one :class:`Check` per expectation;
``evaluate(check, Subject(facts, labels))`` gives a :class:`CheckResult`. The schema lives in
schemas/model.schema.json (installed as harness/schemas/).
"""

from __future__ import annotations

from harness.errors import SpecErrors

from ._checks import CheckResult, Subject, evaluate
from ._expectations import (
    Expectation,
    Matcher,
    NumberExpectation,
    Op,
    PresenceExpectation,
    QuantityExpectation,
)
from ._load import load_spec, validate
from ._matrix import MODEL_FILES, Selected, find_model_files, matrix, parse_only, select
from ._quality import QualitySection, Reference, Threshold
from ._records import NO_CHECKS, BuildSpec, Check, Context, ModelSpec, SourceSpec, Variant
from ._schema import load_schema
from ._sections import BudgetSpec, MemorySection, PublishSection, SmokeSection
from ._smoke import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_SEED,
    DEFAULT_TIMEOUT,
    CheckKind,
    EmbeddingExpect,
    Message,
    SimilarityBound,
    SmokeCheck,
    TextExpect,
)
from ._update import Update, update_expectations, update_from_report
from ._yaml import Located

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SEED",
    "DEFAULT_TIMEOUT",
    "MODEL_FILES",
    "NO_CHECKS",
    "BudgetSpec",
    "BuildSpec",
    "Check",
    "CheckKind",
    "CheckResult",
    "Context",
    "EmbeddingExpect",
    "Expectation",
    "Located",
    "Matcher",
    "MemorySection",
    "Message",
    "ModelSpec",
    "NumberExpectation",
    "Op",
    "PresenceExpectation",
    "PublishSection",
    "QualitySection",
    "QuantityExpectation",
    "Reference",
    "Selected",
    "SimilarityBound",
    "SmokeCheck",
    "SmokeSection",
    "SourceSpec",
    "SpecErrors",
    "Subject",
    "TextExpect",
    "Threshold",
    "Update",
    "Variant",
    "evaluate",
    "find_model_files",
    "load_schema",
    "load_spec",
    "matrix",
    "parse_only",
    "select",
    "update_expectations",
    "update_from_report",
    "validate",
]
