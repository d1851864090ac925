"""``--update-expectations``: after an intentional change, write what was measured into the
model.yaml lines whose exact expectations failed, as snapshot tools do.

Only exact values are rewritten (``architecture: llama``, ``parameters: 134.52M`` in the same
unit and precision, ``file_type``, a metadata value or label): a range or a regex says what is
acceptable, which a measurement cannot decide, so it is listed as left alone. Each value is
replaced where it stands, so comments, order and layout stay; the file is written atomically
and the change is returned as a unified diff.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from harness._fs import atomic_write
from harness.report import Report
from harness.units import Quantity

from ._expectations import Matcher, NumberExpectation, QuantityExpectation
from ._records import Check, ModelSpec

__all__ = ["Update", "update_expectations", "update_from_report"]


@dataclass(frozen=True)
class Update:
    diff: str  # unified diff of model.yaml; empty when nothing was rewritten
    left: tuple[str, ...]  # "expect.bpw: a range" — failing checks not rewritten, and why


def update_expectations(spec: ModelSpec, failures: Sequence[tuple[Check, Any]]) -> Update:
    """Rewrite the value of each failing ``(check, measured)`` that is an exact expectation."""
    text = spec.path.read_text(encoding="utf-8")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    edits: list[tuple[int, int, str]] = []
    left: list[str] = []
    for check, measured in failures:
        written = _render(check, measured)
        node = _node(root, ("expect", *check.name.split("::")))
        shown = "expect." + check.name.replace("::", ".")
        if written is None:
            left.append(f"{shown}: not an exact value (a range, a pattern): edit it by hand")
        elif node is None or not isinstance(node, yaml.ScalarNode):
            left.append(f"{shown}: not a plain value in the file: edit it by hand")
        else:
            edits.append((node.start_mark.index, node.end_mark.index, written))
    new = text
    for start, end, written in sorted(edits, reverse=True):
        new = new[:start] + written + new[end:]
    if new == text:
        return Update("", tuple(left))
    atomic_write(spec.path, new.encode("utf-8"))
    diff = difflib.unified_diff(
        text.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=str(spec.path),
        tofile=str(spec.path),
    )
    return Update("".join(diff), tuple(left))


def _render(check: Check, measured: Any) -> str | None:
    expected = check.expected
    if isinstance(expected, QuantityExpectation):
        if expected.exact is None or not isinstance(measured, int):
            return None
        return _quantity(expected.exact, measured)
    if isinstance(expected, NumberExpectation):
        return None if expected.exact is None else _scalar(measured)
    if isinstance(expected, Matcher):
        ops = expected.ops
        return _scalar(measured) if len(ops) == 1 and ops[0].name == "equals" else None
    return None


def _quantity(written: Quantity, measured: int) -> str:
    """``measured`` in the unit and to the precision the expectation was written in."""
    value = (Decimal(measured) / written.scale).quantize(Decimal(1).scaleb(-written.decimals))
    return f"{value}{' ' if written.spaced else ''}{written.unit}"


def _scalar(value: Any) -> str:
    if isinstance(value, bool | int | float) or value is None:
        return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
    dumped: str = yaml.safe_dump(str(value), default_flow_style=True, width=10**6)
    return dumped.removesuffix("\n...\n").strip()


def _node(root: yaml.Node | None, path: Sequence[str]) -> yaml.Node | None:
    node = root
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
    return node


def update_from_report(specs: Mapping[str, ModelSpec], report: Report) -> list[Update]:
    """Every model's failing exact expectations, rewritten to what this run measured."""
    updates = []
    for path, record in report.models.items():
        spec = specs.get(path)
        if spec is None:
            continue
        checks = {check.name: check for check in spec.checks}
        failures = [
            (checks[item.name], item.actual)
            for item in record.items
            if item.section == "expect" and item.outcome == "failed" and item.name in checks
        ]
        if failures:
            updates.append(update_expectations(spec, failures))
    return updates
