"""Cashback: the net loss of the period times the rate, after a minimum loss, up to a cap.

The net loss is stake minus payout over the counted categories, and only a
positive net loss pays. When rates differ by category, the rate applied is
the average of the rates of the categories the player lost in, weighted by
each category's loss. So a win in one category lowers the basis but never
raises the rate, and the credit is at most the highest rate times the net loss.
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


def calculate_net_loss_credit(activity: PlayerActivity, terms: Terms) -> Calculation:
    """Return the credit on the player's net loss over the categories ``terms`` count."""
    totals = counted(activity, terms)
    net_loss_minor = sum(category.net_loss_minor for category in totals)
    details = category_details(
        activity,
        terms,
        "net_loss_minor",
        {category.category: category.net_loss_minor for category in totals},
    )
    if not totals:
        return Calculation(0, 0, f"{NO_BASIS}: no settled bets in counted categories", details)
    if net_loss_minor <= 0:
        return Calculation(
            net_loss_minor,
            0,
            f"{NO_BASIS}: no net loss (net result {-net_loss_minor} in the player's favour)",
            details,
        )

    losing = [category for category in totals if category.net_loss_minor > 0]
    total_loss_minor = sum(category.net_loss_minor for category in losing)
    # The weighted rate is scaled_loss_minor / (rate_scale * total_loss_minor), and the
    # credit is that rate times the net loss, rounded down in one floor division.
    scaled_loss_minor = sum(
        terms.scaled_rate(activity.vip_tier, category.category) * category.net_loss_minor
        for category in losing
    )
    amount_minor = (scaled_loss_minor * net_loss_minor) // (terms.rate_scale * total_loss_minor)
    return apply_limits(net_loss_minor, amount_minor, terms, details)


def calculate_cashback(activity: PlayerActivity, terms: Terms) -> Calculation:
    """Return the cashback of one player; ``terms.counted_categories`` None counts every one."""
    return calculate_net_loss_credit(activity, terms)
