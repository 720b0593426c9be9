"""Tests of exact money: registry prices to integer cents, and cents to JSON numbers."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from trioshop.domain.money import parse_cents, to_json_number


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        ("149.99", 14999),
        (149.99, 14999),
        (1499.99, 149999),
        (0.1, 10),
        (0.29, 29),
        (1.15, 115),
        (79.99, 7999),
        ("5", 500),
        ("5.5", 550),
        ("0.01", 1),
        (Decimal("12.34"), 1234),
    ],
)
def test_decimals_parse_exactly(value: object, cents: int) -> None:
    """Prices with up to two decimals become exact cents, floats included (no float error)."""
    assert parse_cents(value) == cents


@pytest.mark.parametrize(("value", "cents"), [(0, 0), (5, 500), (1500, 150000), (10**9, 10**11)])
def test_ints_parse_as_whole_units(value: int, cents: int) -> None:
    """Whole numbers are units: 5 is 500 cents."""
    result = parse_cents(value)
    assert result == cents
    assert type(result) is int


def test_result_is_always_an_int() -> None:
    """Even float and string input gives a plain int, never a float or Decimal."""
    assert type(parse_cents(149.99)) is int
    assert type(parse_cents("149.99")) is int


@pytest.mark.parametrize("value", [True, False])
def test_booleans_refused(value: bool) -> None:
    """Booleans are not amounts even though bool is an int subclass."""
    with pytest.raises(ValueError, match="expected a number"):
        parse_cents(value)


@pytest.mark.parametrize("value", [-1, -0.01, "-5", Decimal("-1.00")])
def test_negative_amounts_refused(value: object) -> None:
    """Negative prices are refused."""
    with pytest.raises(ValueError, match="non-negative"):
        parse_cents(value)


@pytest.mark.parametrize("value", ["1.999", 0.001, "149.991", 149.999, Decimal("0.005")])
def test_more_than_two_decimals_refused(value: object) -> None:
    """Fractions of a cent are refused rather than rounded."""
    with pytest.raises(ValueError, match="two decimals"):
        parse_cents(value)


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), "NaN", "inf", "Infinity", Decimal("NaN")]
)
def test_non_finite_refused(value: object) -> None:
    """NaN and infinities are refused as not finite."""
    with pytest.raises(ValueError, match="finite"):
        parse_cents(value)


@pytest.mark.parametrize("value", ["", "abc", "1,50", "12 34", "0x10", "1.2.3"])
def test_non_numeric_strings_refused(value: str) -> None:
    """Strings that are not decimal numbers are refused."""
    with pytest.raises(ValueError, match="expected a number"):
        parse_cents(value)


@pytest.mark.parametrize("value", [None, [1], {"price": 1}, b"5", complex(1, 0), object()])
def test_non_numbers_refused(value: object) -> None:
    """Values of other types are refused with their type named."""
    with pytest.raises(ValueError, match=type(value).__name__):
        parse_cents(value)


def test_to_json_number_renders_two_decimals() -> None:
    """Cents become a float with the two-decimal amount as its repr."""
    assert to_json_number(179997) == 1799.97
    assert repr(to_json_number(179997)) == "1799.97"
    assert repr(to_json_number(1)) == "0.01"
    assert repr(to_json_number(10)) == "0.1"


@pytest.mark.parametrize(("cents", "number"), [(0, 0), (100, 1), (150000, 1500), (700, 7)])
def test_whole_amounts_are_ints(cents: int, number: int) -> None:
    """Whole amounts are rendered as ints (1500, not 1500.0)."""
    result = to_json_number(cents)
    assert result == number
    assert type(result) is int
    assert json.dumps(result) == str(number)


def test_round_trip_is_exact_for_many_amounts() -> None:
    """Every amount rendered to JSON parses back, as a Decimal, to exactly cents / 100."""
    amounts = [*range(0, 100_001), *range(999_900, 1_000_100), 149999, 10**12 + 1, 2**40 + 99]
    for cents in amounts:
        text = json.dumps(to_json_number(cents))
        assert Decimal(text) == Decimal(cents) / 100, (cents, text)


def test_round_trip_through_parse_cents() -> None:
    """parse_cents reads back what to_json_number wrote, for prices up to a million units."""
    for cents in range(0, 100_000_000, 9973):
        assert parse_cents(json.loads(json.dumps(to_json_number(cents)))) == cents


@pytest.mark.parametrize(
    "value",
    [
        "1234567890123456789012345678.001",  # a third decimal beyond the default precision
        "1e-999999999",  # tiny: not a whole number of cents
        "1e999999",  # huge: refused before any arithmetic
        "1" * 40,
    ],
)
def test_extreme_amounts_are_refused_not_rounded(value: str) -> None:
    """Amounts that default decimal precision would round or overflow are refused cleanly."""
    with pytest.raises(ValueError):
        parse_cents(value)
