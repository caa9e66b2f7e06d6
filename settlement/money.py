"""Conversion between Decimal amounts and integer minor units of a currency.

Amounts are stored as integer minor units (cents for a 2-decimal currency).
Every conversion that must drop precision rounds toward the house, that is
down for a credit, so a player is never paid more than the terms give.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

#: Decimal places a currency may have (ISO 4217 uses 0, 2 and 3).
MINOR_UNIT_CHOICES = (0, 2, 3)


def _check_minor_units(minor_units: int) -> None:
    if minor_units not in MINOR_UNIT_CHOICES:
        raise ValueError(f"invalid minor units {minor_units}: expected one of 0, 2, 3")


def to_decimal(amount_minor: int, minor_units: int) -> Decimal:
    """Return ``amount_minor`` as a Decimal in major units, for example 12345 -> 123.45."""
    _check_minor_units(minor_units)
    return Decimal(amount_minor).scaleb(-minor_units)


def to_minor(amount: Decimal, minor_units: int) -> int:
    """Return ``amount`` (major units) in minor units, rounded down to the minor unit."""
    _check_minor_units(minor_units)
    quantum = Decimal(1).scaleb(-minor_units)
    rounded = amount.quantize(quantum, rounding=ROUND_FLOOR)
    return int(rounded.scaleb(minor_units))


def format_money(amount_minor: int, currency: str, minor_units: int) -> str:
    """Return ``amount_minor`` as text with the currency's decimals, for example '123.45 PHP'."""
    return f"{to_decimal(amount_minor, minor_units):.{minor_units}f} {currency}"
