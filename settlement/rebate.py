"""Rebate: valid turnover of the period times the rate of each game category.

Valid turnover is the stake of settled bets; voided and cancelled bets never
reach the calculator because eligibility counts settled bets only.
"""

from __future__ import annotations

from settlement.calculation import (
    NO_BASIS,
    Calculation,
    PlayerActivity,
    apply_limits,
    category_details,
    counted,
)
from settlement.terms import Terms


def calculate_rebate(activity: PlayerActivity, terms: Terms) -> Calculation:
    """Return the rebate of one player: the sum over counted categories of stake times rate."""
    totals = counted(activity, terms)
    basis_minor = sum(category.stake_minor for category in totals)
    details = category_details(
        activity,
        terms,
        "turnover_minor",
        {category.category: category.stake_minor for category in totals},
    )
    if basis_minor <= 0:
        return Calculation(0, 0, f"{NO_BASIS}: no valid turnover in counted categories", details)

    scaled_amount_minor = sum(
        terms.scaled_rate(activity.vip_tier, category.category) * category.stake_minor
        for category in totals
    )
    return apply_limits(basis_minor, scaled_amount_minor // terms.rate_scale, terms, details)
