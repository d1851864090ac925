"""Evaluate a Check against what was measured: one pass/fail with a one-line reason."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.gguf._facts import ArraySummary, GGUFFacts
from harness.units import format_count, format_size

from ._expectations import (
    Matcher,
    Op,
    PresenceExpectation,
    QuantityExpectation,
)
from ._records import Check
from ._schema import show

__all__ = ["CheckResult", "Subject", "evaluate"]

_FACT_FIELDS = frozenset(
    {
        "architecture",
        "name",
        "file_type",
        "parameters",
        "size",
        "file_size",
        "bpw",
        "tensor_count",
        "context_length",
        "embedding_length",
        "block_count",
        "vocab_size",
        "chat_template",
        "tokenizer_model",
    }
)


class _Absent:
    """A value the artifact does not have (missing metadata key, label, or GGUF field)."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


@dataclass(frozen=True)
class Subject:
    """What checks run against: the GGUF's facts and, for an image, its labels."""

    facts: GGUFFacts
    labels: Mapping[str, str] | None = None  # None: a bare GGUF file, no image


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, with JSON-able expected and actual values for reports."""

    check: Check
    passed: bool
    expected: Any
    actual: Any
    message: str


def evaluate(check: Check, subject: Subject) -> CheckResult:
    """Run one check; never raises for a mismatch, only reports it."""
    expected = check.expected.to_json()
    if check.name.startswith("labels::") and subject.labels is None:
        message = (
            f"expected {check.subject} {check.expected.phrase()}, but the artifact is a bare"
            " GGUF file without an image, so it has no labels"
        )
        return CheckResult(check, False, expected, None, message)
    actual = _actual(check.name, subject)
    passed, message = _judge(check, actual)
    return CheckResult(check, passed, expected, _json(actual), message)


def _actual(name: str, subject: Subject) -> object:
    group, _, key = name.partition("::")
    if group == "metadata":
        return subject.facts.metadata.get(key, _ABSENT)
    if group == "labels":
        return (subject.labels or {}).get(key, _ABSENT)
    if name not in _FACT_FIELDS:
        raise ValueError(f"no such expectation: {name!r}")
    value = getattr(subject.facts, name)
    return _ABSENT if value is None else value


def _json(actual: object) -> Any:
    if actual is _ABSENT:
        return None
    if isinstance(actual, ArraySummary):
        return {"type": actual.type, "length": actual.length}
    if isinstance(actual, tuple):
        return list(actual)
    return actual


def _display(check: Check, actual: object) -> str:
    expected = check.expected
    if isinstance(actual, ArraySummary):
        return f"an array of {actual.length} {actual.type}"
    if isinstance(expected, QuantityExpectation) and isinstance(actual, int):
        if expected.exact is not None and expected.exact.unit:
            return f"{expected.exact.format_like(actual)} ({actual:,})"
        formatted = format_size(actual) if expected.kind == "size" else format_count(actual)
        return f"{formatted} ({actual:,})"
    if isinstance(actual, float):
        # GGUF floats are float32: seven digits say all they hold (1e-05, not 9.99999975e-06).
        return f"{actual:.4g}" if check.name == "bpw" else f"{actual:.7g}"
    return show(actual)


def _judge(check: Check, actual: object) -> tuple[bool, str]:
    expected, subject = check.expected, check.subject
    if isinstance(expected, Matcher):
        return _judge_matcher(check, expected, actual)
    if isinstance(expected, PresenceExpectation):
        state = "present" if actual is True else "absent"
        if (actual is True) == expected.present:
            return True, f"{subject} is {state}"
        return False, f"expected {subject} {expected.phrase()}, but it is {state}"
    if actual is _ABSENT:
        return False, f"expected {subject} {expected.phrase()}, but the GGUF does not record it"
    if not isinstance(actual, (int, float)) or isinstance(actual, bool):
        return False, f"expected {subject} {expected.phrase()}, got {show(actual)} (not a number)"
    if isinstance(expected, QuantityExpectation):
        held = isinstance(actual, int) and expected.holds(actual)
    else:
        held = expected.holds(actual)
    shown = _display(check, actual)
    if not held:
        return False, f"expected {subject} {expected.phrase()}, got {shown}"
    if expected.exact is not None:
        return True, f"{subject} is {shown}"
    return True, f"{subject} {shown} {expected.phrase()}"


def _judge_matcher(check: Check, matcher: Matcher, actual: object) -> tuple[bool, str]:
    subject = check.subject
    if actual is _ABSENT:
        if any(op.name == "present" and op.operand is False for op in matcher.ops):
            return True, f"{subject} is absent"
        where = (
            "the image has no such label"
            if check.name.startswith("labels::")
            else "the GGUF does not record it"
        )
        return False, f"expected {subject} {matcher.phrase()}, but {where}"
    failed = tuple(op for op in matcher.ops if not _holds(op, actual))
    shown = _display(check, actual)
    if failed:
        reasons = [why for op in failed if (why := _why_not(op, actual))]
        suffix = f" ({'; '.join(reasons)})" if reasons else ""
        return False, f"expected {subject} {matcher.phrase(failed)}, got {shown}{suffix}"
    if [op.name for op in matcher.ops] == ["equals"]:
        return True, f"{subject} is {shown}"
    return True, f"{subject} {shown} {matcher.phrase()}"


def _as_number(value: object) -> float | None:
    """A number's value; None for anything else, booleans included."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text(value: object) -> str | None:
    """The text regex/contains look at; None for arrays, whose bodies are not read."""
    if isinstance(value, ArraySummary):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: object) -> float | None:
    if (number := _as_number(value)) is not None:
        return number
    if isinstance(value, str):  # a label such as "8192"
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(actual: object, expected: object) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected or (isinstance(actual, str) and actual == _text(expected))
    if isinstance(actual, int) and isinstance(expected, int):
        return actual == expected
    left, right = _as_number(actual), _as_number(expected)
    if left is not None and right is not None:
        # GGUF floats are float32: 1e-5 is stored as 9.99999974e-06.
        return math.isclose(left, right, rel_tol=1e-6)
    if isinstance(actual, str) and right is not None:
        return actual == _text(expected) or _number(actual) == expected
    return actual == expected


def _holds(op: Op, actual: object) -> bool:
    text = _text(actual)
    if op.name == "present":
        return bool(op.operand)  # `actual` exists here; absence is handled before
    if op.name == "equals":
        return _equal(actual, op.operand)
    if op.name == "in":
        return any(_equal(actual, item) for item in op.operand)
    if op.name == "regex":
        return text is not None and re.search(op.operand, text) is not None
    if op.name == "not_regex":
        return text is not None and re.search(op.operand, text) is None
    if op.name == "contains":
        return text is not None and op.operand in text
    if op.name == "length":
        length = actual.length if isinstance(actual, ArraySummary) else len(text or "")
        return isinstance(actual, (ArraySummary, str)) and bool(op.operand.holds(length))
    number = _number(actual)
    if number is None:
        return False
    bound = float(op.operand)
    return number >= bound if op.name == "min" else number <= bound


def _why_not(op: Op, actual: object) -> str | None:
    if isinstance(actual, ArraySummary) and op.name in (
        "equals",
        "in",
        "regex",
        "not_regex",
        "contains",
    ):
        return "array contents are not read; test its length"
    if op.name in ("min", "max") and _number(actual) is None:
        return "not a number"
    if op.name == "length" and isinstance(actual, ArraySummary):
        return f"length {actual.length}"
    if op.name == "length" and isinstance(actual, str):
        return f"length {len(actual)}"
    if op.name == "length":
        return "neither a string nor an array"
    return None
