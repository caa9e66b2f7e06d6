"""Decimal and minor-unit conversion, rounding down, for 0-, 2- and 3-decimal currencies."""

from __future__ import annotations

from decimal import Decimal

import pytest

from settlement.money import format_money, to_decimal, to_minor


@pytest.mark.parametrize(
    ("amount", "minor_units", "expected_minor"),
    [
        (Decimal("123.45"), 2, 12345),
        (Decimal("1.239"), 2, 123),
        (Decimal("0.009"), 2, 0),
        (Decimal("1999.99"), 0, 1999),
        (Decimal("1.5"), 0, 1),
        (Decimal("0.0019"), 3, 1),
        (Decimal("12.3456"), 3, 12345),
        (Decimal("100"), 3, 100000),
    ],
)
def test_to_minor_rounds_down(amount: Decimal, minor_units: int, expected_minor: int) -> None:
    assert to_minor(amount, minor_units) == expected_minor


@pytest.mark.parametrize(
    ("amount_minor", "minor_units", "expected"),
    [
        (12345, 2, Decimal("123.45")),
        (12345, 0, Decimal("12345")),
        (12345, 3, Decimal("12.345")),
        (5, 2, Decimal("0.05")),
    ],
)
def test_to_decimal_scales(amount_minor: int, minor_units: int, expected: Decimal) -> None:
    assert to_decimal(amount_minor, minor_units) == expected


def test_format_money_shows_currency_decimals() -> None:
    assert format_money(5, "KWD", 3) == "0.005 KWD"
    assert format_money(12345, "PHP", 2) == "123.45 PHP"
    assert format_money(12345, "KRW", 0) == "12345 KRW"


def test_to_minor_unknown_minor_units_raises() -> None:
    with pytest.raises(ValueError, match="invalid minor units 4"):
        to_minor(Decimal("1"), 4)
