"""The one parser and formatter for sizes (bytes) and counts (parameters, tokens).

Sizes: a whole number of bytes, or a number and a unit. ``KiB MiB GiB TiB PiB`` (also ``Ki``...)
are binary (1024**n); ``KB MB GB TB PB`` and the bare ``K M G T P`` are decimal (1000**n), as
disk and cloud vendors write them. Units are case-insensitive: ``450mib`` is ``450MiB``.

Counts: a whole number, or a number and ``K`` (thousand), ``M`` (million), ``B`` (billion) or ``T``
(trillion), case-insensitive: ``135k``, ``494M``, ``1.5B``, ``494.03 M``.

A value can be read two ways. ``parse_size``/``parse_count`` give its nominal value (budgets,
bounds). A :class:`Quantity` also remembers how precisely it was written, so that
``parameters: 134.52M`` matches 134_515_008: any actual value that rounds to the written digits
(within half a unit of the last digit, both ends inclusive, so every rounding mode agrees).
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Literal, NamedTuple

from harness.errors import Location, UnitError

__all__ = [
    "COUNT_PATTERN",
    "PERCENT_PATTERN",
    "SIZE_PATTERN",
    "Quantity",
    "UnitError",
    "format_count",
    "format_size",
    "matches_written",
    "parse_count",
    "parse_count_quantity",
    "parse_percent",
    "parse_size",
    "parse_size_quantity",
]

Kind = Literal["size", "count"]

# The schema (schemas/model.schema.json) uses these same patterns so editors flag what we reject.
_NUMBER = r"\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*"
SIZE_PATTERN = rf"^{_NUMBER}([kKmMgGtTpP][iI]?[bB]?|[bB])?\s*$"
COUNT_PATTERN = rf"^{_NUMBER}([kKmMbBtT])?\s*$"
PERCENT_PATTERN = rf"^{_NUMBER}%\s*$"

_SIZE_RE = re.compile(SIZE_PATTERN)
_COUNT_RE = re.compile(COUNT_PATTERN)
_PERCENT_RE = re.compile(PERCENT_PATTERN)

_PREFIXES = "kmgtp"
_SIZE_SCALES: dict[str, int] = {"": 1, "b": 1}
for _power, _prefix in enumerate(_PREFIXES, start=1):
    _SIZE_SCALES[_prefix] = _SIZE_SCALES[_prefix + "b"] = 1000**_power
    _SIZE_SCALES[_prefix + "i"] = _SIZE_SCALES[_prefix + "ib"] = 1024**_power
_COUNT_SCALES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}

_SIZE_HINT = "like 450MiB, 2GB or 1.5GiB (K/M/G/T are decimal, Ki/Mi/Gi/Ti binary)"
_COUNT_HINT = "like 135k, 494M or 1.5B"


class Quantity(NamedTuple):
    """A size or count as written, with the precision it was written to."""

    text: str  # as written, stripped
    kind: Kind
    mantissa: Decimal  # the number before the unit
    unit: str  # as written; "" for none
    scale: int  # base units (bytes, items) per unit
    decimals: int  # digits written after the decimal point
    spaced: bool  # a space between number and unit, kept when formatting alike

    @property
    def value(self) -> int:
        """The nominal value in bytes or items (half-way cases round up)."""
        return int((self.mantissa * self.scale).to_integral_value(ROUND_HALF_UP))

    @property
    def low(self) -> int:
        """The smallest actual value that matches as written."""
        return math.ceil((self.mantissa - self._half_step) * self.scale)

    @property
    def high(self) -> int:
        """The largest actual value that matches as written."""
        return math.floor((self.mantissa + self._half_step) * self.scale)

    @property
    def _half_step(self) -> Decimal:
        return Decimal(5).scaleb(-(self.decimals + 1))

    def matches(self, actual: int) -> bool:
        """Whether ``actual`` rounds to the written digits (plain integers match exactly)."""
        return self.low <= actual <= self.high

    def format_like(self, actual: int) -> str:
        """``actual`` written with this quantity's unit and precision, e.g. ``134.99M``."""
        step = Decimal(1).scaleb(-self.decimals)
        number = (Decimal(actual) / self.scale).quantize(step, ROUND_HALF_EVEN)
        return f"{number}{' ' if self.spaced else ''}{self.unit}"

    def __str__(self) -> str:
        return self.text


def parse_size_quantity(value: str | int | float, *, location: Location | None = None) -> Quantity:
    """Read a size as written; see the module docstring for the units."""
    return _parse(value, "size", location)


def parse_count_quantity(value: str | int | float, *, location: Location | None = None) -> Quantity:
    """Read a count as written; see the module docstring for the suffixes."""
    return _parse(value, "count", location)


def parse_size(value: str | int | float, *, location: Location | None = None) -> int:
    """Bytes: ``"450MiB"`` -> 471859200, ``"2GB"`` -> 2000000000, ``1024`` -> 1024."""
    return _parse(value, "size", location).value


def parse_count(value: str | int | float, *, location: Location | None = None) -> int:
    """Items: ``"494M"`` -> 494000000, ``"1.5B"`` -> 1500000000, ``"135k"`` -> 135000."""
    return _parse(value, "count", location).value


def matches_written(
    written: str | int | float,
    actual: int,
    *,
    kind: Kind = "count",
    location: Location | None = None,
) -> bool:
    """Whether ``actual`` matches ``written`` to the precision it was written with."""
    return _parse(written, kind, location).matches(actual)


def parse_percent(value: str, *, location: Location | None = None) -> float:
    """``"10%"`` -> 0.1 (a fraction)."""
    match = _PERCENT_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise UnitError(
            f"invalid percentage {value!r}: expected a number and '%', like 10%", location
        )
    return float(Decimal(match.group(1)) / 100)


def format_size(size: int) -> str:
    """Binary units with two decimals, as llama.cpp prints them: ``98.37 MiB``; ``512 B``."""
    return _format(size, 1024, ("B", "KiB", "MiB", "GiB", "TiB", "PiB"))


def format_count(count: int) -> str:
    """Decimal suffixes with two decimals, as the seed labels them: ``494.03 M``; ``135``."""
    return _format(count, 1000, ("", "K", "M", "B", "T"))


def _format(value: int, base: int, units: tuple[str, ...]) -> str:
    if value < 0:
        return "-" + _format(-value, base, units)
    if value < base:
        return f"{value} {units[0]}".rstrip()
    power = min(int(math.log(value, base)), len(units) - 1)
    # log() can land one off at exact powers; settle it with integer arithmetic.
    while power > 0 and value < base**power:
        power -= 1
    while power + 1 < len(units) and value >= base ** (power + 1):
        power += 1
    number = (Decimal(value) / base**power).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    if number >= base and power + 1 < len(units):  # 1023.999 KiB prints as 1.00 MiB
        power += 1
        number = (Decimal(value) / base**power).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    return f"{number} {units[power]}"


def _parse(value: object, kind: Kind, location: Location | None) -> Quantity:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"invalid {kind} {value!r}: expected a number or a string", location)
    if isinstance(value, float):
        if not value.is_integer():
            what = "bytes" if kind == "size" else "a count"
            raise UnitError(f"invalid {kind} {value!r}: {what} must be a whole number", location)
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise UnitError(f"invalid {kind} {value}: must not be negative", location)
        return Quantity(str(value), kind, Decimal(value), "", 1, 0, False)

    regex, scales, hint = (
        (_SIZE_RE, _SIZE_SCALES, _SIZE_HINT)
        if kind == "size"
        else (_COUNT_RE, _COUNT_SCALES, _COUNT_HINT)
    )
    match = regex.match(value)
    if match is None:
        raise UnitError(
            f"invalid {kind} {value!r}: expected a whole number or a number {hint}", location
        )
    number, unit = match.group(1), match.group(2) or ""
    scale = scales[unit.lower()]
    mantissa = Decimal(number)
    decimals = len(number.partition(".")[2])
    if scale == 1 and decimals:
        what = "bytes" if kind == "size" else "a count without a suffix"
        raise UnitError(f"invalid {kind} {value!r}: {what} must be a whole number", location)
    spaced = bool(unit) and value[match.end(1) : match.start(2)] != ""
    return Quantity(value.strip(), kind, mantissa, unit, scale, decimals, spaced)
