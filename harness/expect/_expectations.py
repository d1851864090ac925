"""What an expectation expects, parsed from schema-valid YAML: matchers, quantities, ranges."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from harness.errors import Location, SpecError
from harness.units import Quantity, UnitError, parse_count_quantity, parse_size_quantity

from ._schema import show

__all__ = [
    "NUMBER_KEYS",
    "QUANTITY_KEYS",
    "Expectation",
    "Matcher",
    "NumberExpectation",
    "Op",
    "PresenceExpectation",
    "QuantityExpectation",
    "parse_expectation",
    "parse_matcher",
]

Inner = Mapping[str, Location] | None
QUANTITY_KEYS: Mapping[str, Literal["size", "count"]] = {
    "parameters": "count",
    "size": "size",
    "file_size": "size",
}
NUMBER_KEYS = frozenset(
    {"bpw", "tensor_count", "context_length", "embedding_length", "block_count", "vocab_size"}
)
# The order tests are listed in messages, whatever order the YAML wrote them in.
OPERATORS = ("present", "equals", "in", "regex", "not_regex", "contains", "min", "max", "length")


class Op(NamedTuple):
    """One test of a matcher: ``name`` is one of OPERATORS."""

    name: str
    operand: Any  # a scalar; a tuple for `in`; a NumberExpectation for `length`


@dataclass(frozen=True)
class NumberExpectation:
    """An exact number, or inclusive bounds (either may be None)."""

    exact: int | float | None = None
    min: int | float | None = None
    max: int | float | None = None

    def to_json(self) -> dict[str, Any]:
        if self.exact is not None:
            return {"equals": self.exact}
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}

    def phrase(self) -> str:
        if self.exact is not None:
            return str(self.exact)
        return _range_phrase(self.min, self.max)

    def holds(self, actual: float) -> bool:
        if self.exact is not None:
            if isinstance(actual, float):
                # Measured fractions match as written: bpw 5.29 accepts 5.2861, 5 accepts 4.9.
                exponent = Decimal(repr(self.exact)).as_tuple().exponent
                decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
                return abs(actual - self.exact) <= 0.5 * 10.0**-decimals * (1 + 1e-9)
            return actual == self.exact
        return (self.min is None or actual >= self.min) and (self.max is None or actual <= self.max)


@dataclass(frozen=True)
class QuantityExpectation:
    """A size or count: exact as written (``134.52M``) or bounds (each at its nominal value)."""

    kind: Literal["size", "count"]
    exact: Quantity | None = None
    min: Quantity | None = None
    max: Quantity | None = None

    def to_json(self) -> dict[str, Any]:
        if self.exact is not None:
            return {"written": self.exact.text, "min": self.exact.low, "max": self.exact.high}
        return {k: q.value for k, q in (("min", self.min), ("max", self.max)) if q is not None}

    def phrase(self) -> str:
        if self.exact is not None:
            return self.exact.text
        return _range_phrase(self.min, self.max)

    def holds(self, actual: int) -> bool:
        if self.exact is not None:
            return self.exact.matches(actual)
        low = self.min.value if self.min is not None else None
        high = self.max.value if self.max is not None else None
        return (low is None or actual >= low) and (high is None or actual <= high)


@dataclass(frozen=True)
class PresenceExpectation:
    """Whether something (the chat template) is there at all."""

    present: bool

    def to_json(self) -> dict[str, Any]:
        return {"present": self.present}

    def phrase(self) -> str:
        return "present" if self.present else "absent"


@dataclass(frozen=True)
class Matcher:
    """Tests that must all hold; a plain YAML scalar is ``(Op("equals", value),)``."""

    ops: tuple[Op, ...]

    def to_json(self) -> dict[str, Any]:
        return {op.name: _json(op.operand) for op in self.ops}

    def phrase(self, ops: tuple[Op, ...] | None = None) -> str:
        return " and ".join(
            _op_phrase(op) for op in _merge_bounds(self.ops if ops is None else ops)
        )


def _json(operand: Any) -> Any:
    if isinstance(operand, NumberExpectation):
        return operand.to_json()
    return list(operand) if isinstance(operand, tuple) else operand


Expectation = Matcher | QuantityExpectation | NumberExpectation | PresenceExpectation


def _range_phrase(low: object, high: object) -> str:
    if low is not None and high is not None:
        return f"within [{low}, {high}]"
    return f"at least {low}" if low is not None else f"at most {high}"


def _merge_bounds(ops: tuple[Op, ...]) -> list[Op]:
    # min and max read best together: "within [1, 5]".
    bounds = {op.name: op.operand for op in ops if op.name in ("min", "max")}
    merged = [op for op in ops if op.name not in ("min", "max")]
    if bounds:
        merged.append(Op("range", NumberExpectation(None, bounds.get("min"), bounds.get("max"))))
    return merged


def _op_phrase(op: Op) -> str:
    operand = op.operand
    if op.name == "equals":
        return show(operand)
    if op.name == "present":
        return "present" if operand else "absent"
    if op.name == "in":
        return "one of " + ", ".join(show(item) for item in operand)
    if op.name == "regex":
        return f"matching /{operand}/"
    if op.name == "not_regex":
        return f"not matching /{operand}/"
    if op.name == "contains":
        return f"containing {show(operand)}"
    if op.name == "length":
        return f"with length {operand.phrase()}"
    return str(operand.phrase())  # range


def parse_expectation(key: str, raw: Any, location: Location, inner: Inner = None) -> Expectation:
    """The expectation of one ``expect`` key (``metadata``/``labels`` entries: ``parse_matcher``).

    ``inner`` gives the locations of an object's own keys, so problems point inside it.
    """
    if key in QUANTITY_KEYS:
        return parse_quantity(raw, QUANTITY_KEYS[key], location, inner)
    if key in NUMBER_KEYS:
        return parse_number(raw, location, inner)
    if key == "chat_template":
        return PresenceExpectation(raw is True or raw == "present")
    return parse_matcher(raw, location, inner)


def parse_matcher(raw: Any, location: Location, inner: Inner = None) -> Matcher:
    """A schema-valid matcher; raises SpecError for a bad regex or contradictory tests."""
    if not isinstance(raw, dict):
        return Matcher((Op("equals", raw),))
    at = _locator(location, inner)
    for name in ("regex", "not_regex"):
        if name in raw:
            try:
                re.compile(raw[name])
            except re.error as error:
                raise SpecError(
                    f"invalid regular expression {raw[name]!r}: {error}", at(name)
                ) from None
    if raw.get("present") is False and len(raw) > 1:
        others = ", ".join(repr(k) for k in raw if k != "present")
        raise SpecError(f"'present: false' cannot be combined with {others}", location)
    _check_order(raw.get("min"), raw.get("max"), at("max"))
    ops = [Op(name, _operand(name, raw[name], at(name))) for name in OPERATORS if name in raw]
    return Matcher(tuple(ops))


def _operand(name: str, raw: Any, location: Location) -> Any:
    if name == "length":
        return parse_number(raw, location)
    return tuple(raw) if name == "in" else raw


def parse_number(raw: Any, location: Location, inner: Inner = None) -> NumberExpectation:
    """A number or ``{min, max}``."""
    if isinstance(raw, dict):
        _check_order(raw.get("min"), raw.get("max"), _locator(location, inner)("max"))
        return NumberExpectation(None, raw.get("min"), raw.get("max"))
    return NumberExpectation(raw)


def parse_quantity(
    raw: Any, kind: Literal["size", "count"], location: Location, inner: Inner = None
) -> QuantityExpectation:
    """A size or count as written, or ``{min, max}`` of them."""
    parse = parse_size_quantity if kind == "size" else parse_count_quantity
    if not isinstance(raw, dict):
        return QuantityExpectation(kind, _unit(parse, raw, location))
    at = _locator(location, inner)
    low = _unit(parse, raw["min"], at("min")) if "min" in raw else None
    high = _unit(parse, raw["max"], at("max")) if "max" in raw else None
    if low is not None and high is not None and low.value > high.value:
        raise SpecError(f"min {low.text} is greater than max {high.text}", at("max"))
    return QuantityExpectation(kind, None, low, high)


def _unit(parse: Callable[..., Quantity], raw: Any, location: Location) -> Quantity:
    try:
        quantity: Quantity = parse(raw, location=location)
    except UnitError as error:  # re-raised as a plain SpecError: callers need no unit types
        raise SpecError(error.message, location) from None
    return quantity


def _locator(location: Location, inner: Inner) -> Callable[[str], Location]:
    return lambda key: (inner or {}).get(key, location)


def _check_order(low: Any, high: Any, location: Location) -> None:
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
        raise SpecError(f"min {low} is greater than max {high}", location)
