"""harness.units: one grammar for sizes and counts, written precision, formatting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import Location, SpecError
from harness.units import (
    COUNT_PATTERN,
    PERCENT_PATTERN,
    SIZE_PATTERN,
    UnitError,
    format_count,
    format_size,
    matches_written,
    parse_count,
    parse_count_quantity,
    parse_percent,
    parse_size,
    parse_size_quantity,
)

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "model.schema.json"

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("450MiB", 450 * MiB),
        ("2GB", 2_000_000_000),
        ("2 GiB", 2 * GiB),
        ("1.5G", 1_500_000_000),  # bare K/M/G/T are decimal
        ("1.5GiB", 1536 * MiB),
        ("24Gi", 24 * GiB),
        ("512", 512),
        ("512B", 512),
        ("1k", 1000),
        ("1KiB", KiB),
        ("1 tib", TiB),  # case-insensitive
        ("98.37 MiB", round(98.37 * MiB)),
        (" 7 MB ", 7_000_000),
        (".5KiB", 512),
        (0, 0),
        (1024, 1024),
        (2048.0, 2048),
    ],
)
def test_parse_size(text: str | int | float, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("494M", 494_000_000),
        ("1.5B", 1_500_000_000),
        ("135k", 135_000),
        ("135K", 135_000),
        ("494.03 M", 494_030_000),
        ("2T", 2 * 10**12),
        ("42", 42),
        (134_515_008, 134_515_008),
    ],
)
def test_parse_count(text: str | int, expected: int) -> None:
    assert parse_count(text) == expected


@pytest.mark.parametrize(
    ("parse", "value", "fragment"),
    [
        (parse_size, "fast", "invalid size 'fast'"),
        (parse_size, "2 GBs", "like 450MiB"),
        (parse_size, "-1GB", "invalid size"),
        (parse_size, "1.5 B", "bytes must be a whole number"),
        (parse_size, "1.5", "bytes must be a whole number"),
        (parse_size, 1.5, "bytes must be a whole number"),
        (parse_size, -3, "must not be negative"),
        (parse_size, True, "expected a number or a string"),
        (parse_count, "1.5G", "invalid count '1.5G'"),  # G is a size unit, not a count suffix
        (parse_count, "lots", "like 135k, 494M or 1.5B"),
        (parse_count, "1.5", "a count without a suffix must be a whole number"),
    ],
)
def test_parse_errors(parse: object, value: object, fragment: str) -> None:
    with pytest.raises(UnitError) as caught:
        parse(value)  # type: ignore[operator]
    assert fragment in str(caught.value)
    # One exception serves both worlds: argparse-style callers and spec loaders.
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, SpecError)


def test_error_carries_location() -> None:
    where = Location("model.yaml", 7, 13)
    with pytest.raises(SpecError) as caught:
        parse_size("fast", location=where)
    assert caught.value.location == where
    assert str(caught.value).startswith("model.yaml:7:13: invalid size 'fast'")


def test_written_precision() -> None:
    assert matches_written("134.52M", 134_515_008)
    assert matches_written("134.52M", 134_515_000)  # the half-way point counts
    assert matches_written("134.52M", 134_525_000)
    assert not matches_written("134.52M", 134_514_999)
    assert not matches_written("134.52M", 134_525_001)
    assert matches_written("494.03 M", 494_032_768)
    assert matches_written(134_515_008, 134_515_008)
    assert not matches_written("134515008", 134_515_009)  # plain integers are exact
    assert matches_written("98.37MiB", 103_146_000, kind="size")
    assert not matches_written("98.37MiB", 103_000_000, kind="size")


def test_quantity_bounds_and_formatting() -> None:
    quantity = parse_count_quantity("134.52M")
    assert (quantity.low, quantity.high, quantity.value) == (134_515_000, 134_525_000, 134_520_000)
    assert quantity.format_like(134_990_000) == "134.99M"
    assert parse_count_quantity("494.03 M").format_like(494_032_768) == "494.03 M"
    assert parse_size_quantity("1.5GiB").format_like(2 * GiB) == "2.0GiB"
    assert str(parse_size_quantity(" 2GB ")) == "2GB"


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (103_147_264, "98.37 MiB"),
        (MiB - 1, "1.00 MiB"),  # rounds up into the next unit, not "1024.00 KiB"
        (400 * MiB + 634 * KiB, "400.62 MiB"),
        (int(1.03 * GiB), "1.03 GiB"),
        (5 * 1024**5, "5.00 PiB"),
        (3 * 1024**6, "3072.00 PiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (135, "135"),
        (135_000, "135.00 K"),
        (134_515_008, "134.52 M"),
        (494_032_768, "494.03 M"),
        (999_999, "1.00 M"),
        (1_500_000_000, "1.50 B"),
    ],
)
def test_format_count(count: int, text: str) -> None:
    assert format_count(count) == text


def test_parse_percent() -> None:
    assert parse_percent("10%") == pytest.approx(0.1)
    assert parse_percent(" 2.5 % ") == pytest.approx(0.025)
    with pytest.raises(UnitError, match="invalid percentage"):
        parse_percent("10")


@given(st.integers(min_value=0, max_value=2**60))
def test_format_size_reads_back_as_written(size: int) -> None:
    text = format_size(size)
    assert matches_written(text, size, kind="size")
    assert parse_size(text) == pytest.approx(size, rel=0.005, abs=1)


@given(st.integers(min_value=0, max_value=10**15))
def test_format_count_reads_back_as_written(count: int) -> None:
    text = format_count(count)
    assert matches_written(text, count)
    assert parse_count(text) == pytest.approx(count, rel=0.005, abs=1)


@given(st.integers(min_value=0, max_value=2**62))
def test_integers_and_their_text_are_exact(value: int) -> None:
    assert parse_size(value) == parse_size(str(value)) == value
    assert parse_count(value) == parse_count(str(value)) == value
    assert matches_written(str(value), value)
    assert not matches_written(str(value), value + 1)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["KiB", "MiB", "GiB", "KB", "MB", "GB", "K", "M", "G"]),
)
def test_whole_units_multiply(number: int, unit: str) -> None:
    scale = {"K": 1000, "M": 1000**2, "G": 1000**3}[unit[0]]
    if "i" in unit:
        scale = {"K": KiB, "M": MiB, "G": GiB}[unit[0]]
    assert parse_size(f"{number}{unit}") == number * scale
    assert parse_size(f"{number} {unit.lower()}") == number * scale


@given(
    st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=10**15),
)
def test_written_match_is_rounding(written: object, actual: int) -> None:
    # `written M` matches exactly the values whose millions round (either way at .5) to it.
    text = f"{written}M"
    in_millions = actual / 10**6
    distance = abs(in_millions - float(str(written)))
    if distance < 0.005 - 1e-9:
        assert matches_written(text, actual)
    elif distance > 0.005 + 1e-9:
        assert not matches_written(text, actual)


def _schema_pattern(name: str) -> str:
    schema = json.loads(SCHEMA.read_text())
    pattern: str = schema["$defs"][name]["pattern"]
    return pattern


def test_schema_patterns_are_the_parsers() -> None:
    # Editors flag exactly what the loader rejects.
    assert _schema_pattern("size") == SIZE_PATTERN
    assert _schema_pattern("count") == COUNT_PATTERN
    assert _schema_pattern("percent") == PERCENT_PATTERN


@given(st.from_regex(re.compile(SIZE_PATTERN), fullmatch=True))
def test_every_size_the_pattern_admits_parses_or_explains(text: str) -> None:
    try:
        assert parse_size(text) >= 0
    except UnitError as error:
        assert "whole number" in str(error)  # fractional bytes: the only pattern-valid rejection
