"""Lossback: like cashback, but on the net loss in its configured categories only.

Lossback terms must list their counted categories (checked by
:func:`settlement.terms.validate_terms`), and lossback has its own rates,
minimums, cap and period length (``LOSSBACK_PERIOD``).
"""

from __future__ import annotations

from settlement.calculation import Calculation, PlayerActivity
from settlement.cashback import calculate_net_loss_credit
from settlement.errors import InvalidTerms
from settlement.terms import Terms


def calculate_lossback(activity: PlayerActivity, terms: Terms) -> Calculation:
    """Return the lossback of one player; raises InvalidTerms if no categories are configured."""
    if terms.counted_categories is None:
        raise InvalidTerms(
            f"lossback terms for {terms.currency} must list their counted categories"
        )
    return calculate_net_loss_credit(activity, terms)
