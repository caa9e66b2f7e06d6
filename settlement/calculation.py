"""Inputs and result of the per-player calculators, and the limits they share.

The calculators (:mod:`settlement.rebate`, :mod:`settlement.cashback`,
:mod:`settlement.lossback`) are pure functions of a player's per-category
totals and the terms. Amounts stay exact until the end, where they are
rounded down once, so a credit never exceeds the terms. They are computed in
whole numbers: each rate times the terms' ``rate_scale`` is a whole number,
so a sum of rates times amounts is exact, and one floor division by the
scale rounds it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from settlement.terms import Terms

#: Skip reason codes stored at the start of ``settlement_items.reason``.
NO_BASIS = "no_basis"
BELOW_MIN_BASIS = "below_min_basis"
BELOW_MIN_PAYOUT = "below_min_payout"
ZERO_AMOUNT = "zero_amount"


@dataclass(frozen=True)
class CategoryTotals:
    """Sums over a player's settled bets of one game category in the period, in minor units."""

    category: str
    stake_minor: int
    payout_minor: int

    @property
    def net_loss_minor(self) -> int:
        """Stake minus payout: positive when the player lost, negative when they won."""
        return self.stake_minor - self.payout_minor


@dataclass(frozen=True)
class PlayerActivity:
    """One player's totals by game category over a period."""

    player_id: int
    currency: str
    vip_tier: int
    status: str
    categories: tuple[CategoryTotals, ...]


@dataclass(frozen=True)
class Calculation:
    """A calculator's result: the amount to credit, or the reason nothing is credited.

    ``amount_minor`` is 0 exactly when ``skip_reason`` is set.
    """

    basis_minor: int
    amount_minor: int
    skip_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def counted(activity: PlayerActivity, terms: Terms) -> list[CategoryTotals]:
    return [totals for totals in activity.categories if terms.counts(totals.category)]


def apply_limits(
    basis_minor: int, amount_minor: int, terms: Terms, details: dict[str, Any]
) -> Calculation:
    """Apply the cap to ``amount_minor`` (already rounded down) and skip amounts below the minimums.

    ``basis_minor`` must already be positive; the caller skips players with no basis.
    """
    if basis_minor < terms.min_basis_minor:
        return Calculation(
            basis_minor,
            0,
            f"{BELOW_MIN_BASIS}: basis {basis_minor} is below the minimum {terms.min_basis_minor}",
            details,
        )

    if terms.cap_minor is not None and amount_minor > terms.cap_minor:
        details = {**details, "capped_from_minor": amount_minor}
        amount_minor = terms.cap_minor

    if amount_minor <= 0:
        return Calculation(basis_minor, 0, f"{ZERO_AMOUNT}: the amount rounds down to 0", details)
    if amount_minor < terms.min_payout_minor:
        return Calculation(
            basis_minor,
            0,
            f"{BELOW_MIN_PAYOUT}: amount {amount_minor} is below the minimum payout"
            f" {terms.min_payout_minor}",
            details,
        )
    return Calculation(basis_minor, amount_minor, None, details)


def category_details(
    activity: PlayerActivity, terms: Terms, basis_name: str, basis_by_category: dict[str, int]
) -> dict[str, Any]:
    """Return an item's details: each category's basis under ``basis_name`` and its rate."""
    rates = {
        category: terms.rate_text(activity.vip_tier, category) for category in basis_by_category
    }
    return {basis_name: basis_by_category, "rates": rates}
