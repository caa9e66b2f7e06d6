"""Hand-computed tables for the rebate, cashback and lossback calculators, and terms validation.

Amounts are in minor units. The expected values were worked out by hand
(the arithmetic is in each case's comment), not by the code under test.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from fractions import Fraction

import pytest

from settlement.calculation import CategoryTotals, PlayerActivity
from settlement.cashback import calculate_cashback
from settlement.errors import InvalidTerms
from settlement.lossback import calculate_lossback
from settlement.rebate import calculate_rebate
from settlement.terms import Terms, validate_terms


def make_terms(
    kind: str,
    rates: dict[tuple[int, str], str],
    *,
    currency: str = "PHP",
    min_basis_minor: int = 0,
    min_payout_minor: int = 0,
    cap_minor: int | None = None,
    counted: set[str] | None = None,
) -> Terms:
    return Terms(
        kind=kind,
        currency=currency,
        min_basis_minor=min_basis_minor,
        min_payout_minor=min_payout_minor,
        cap_minor=cap_minor,
        counted_categories=frozenset(counted) if counted is not None else None,
        rates={key: Decimal(rate) for key, rate in rates.items()},
    )


def activity(vip_tier: int, *categories: tuple[str, int, int]) -> PlayerActivity:
    """A player's totals: (category, stake, payout) per category."""
    totals = tuple(CategoryTotals(name, stake, payout) for name, stake, payout in categories)
    return PlayerActivity(1, "PHP", vip_tier, "active", totals)


def skip_code(reason: str | None) -> str | None:
    return None if reason is None else reason.split(":", 1)[0]


REBATE_RATES = {
    (0, "slots"): "0.01",
    (0, "live"): "0.005",
    (1, "slots"): "0.015",
    (1, "live"): "0.008",
    (2, "slots"): "0.02",
}
REBATE = make_terms("rebate", REBATE_RATES)
REBATE_MIN_BASIS = make_terms("rebate", REBATE_RATES, min_basis_minor=5000)
REBATE_MIN_PAYOUT = make_terms("rebate", REBATE_RATES, min_payout_minor=100)
REBATE_CAP = make_terms("rebate", REBATE_RATES, cap_minor=500)
REBATE_SLOTS_ONLY = make_terms("rebate", REBATE_RATES, counted={"slots"})
REBATE_KRW = make_terms("rebate", {(0, "slots"): "0.01"}, currency="KRW")
REBATE_FINE_RATE = make_terms("rebate", {(0, "slots"): "0.000001"})

# (case, terms, player, basis, amount, skip code)
REBATE_CASES = [
    # 10000 * 0.01 = 100
    ("tier0_slots", REBATE, activity(0, ("slots", 10000, 0)), 10000, 100, None),
    # 12345 * 0.01 = 123.45 -> 123
    ("rounds_down", REBATE, activity(0, ("slots", 12345, 0)), 12345, 123, None),
    # 10000 * 0.015 = 150
    ("tier1_rate", REBATE, activity(1, ("slots", 10000, 0)), 10000, 150, None),
    # 10000 * 0.01 + 20000 * 0.005 = 100 + 100
    (
        "two_categories",
        REBATE,
        activity(0, ("slots", 10000, 0), ("live", 20000, 0)),
        30000,
        200,
        None,
    ),
    # 3333 * 0.015 + 7777 * 0.008 = 49.995 + 62.216 = 112.211 -> 112
    (
        "tier1_mixed",
        REBATE,
        activity(1, ("slots", 3333, 0), ("live", 7777, 0)),
        11110,
        112,
        None,
    ),
    # the payout does not change turnover: 10000 * 0.01 = 100
    ("payout_ignored", REBATE, activity(0, ("slots", 10000, 50000)), 10000, 100, None),
    # tier 2 has no live rate: 50000 * 0 = 0
    ("no_rate_for_tier", REBATE, activity(2, ("live", 50000, 0)), 50000, 0, "zero_amount"),
    # 99 * 0.01 = 0.99 -> 0
    ("rounds_to_zero", REBATE, activity(0, ("slots", 99, 0)), 99, 0, "zero_amount"),
    # 4999 < 5000
    (
        "below_min_basis",
        REBATE_MIN_BASIS,
        activity(0, ("slots", 4999, 0)),
        4999,
        0,
        "below_min_basis",
    ),
    # 5000 * 0.01 = 50, basis equal to the minimum counts
    ("at_min_basis", REBATE_MIN_BASIS, activity(0, ("slots", 5000, 0)), 5000, 50, None),
    # 9999 * 0.01 = 99.99 -> 99 < 100
    (
        "below_min_payout",
        REBATE_MIN_PAYOUT,
        activity(0, ("slots", 9999, 0)),
        9999,
        0,
        "below_min_payout",
    ),
    # 10000 * 0.01 = 100 = minimum payout
    ("at_min_payout", REBATE_MIN_PAYOUT, activity(0, ("slots", 10000, 0)), 10000, 100, None),
    # 100000 * 0.02 = 2000 -> cap 500
    ("capped", REBATE_CAP, activity(2, ("slots", 100000, 0)), 100000, 500, None),
    # live is not counted: 1000 * 0.01 = 10
    (
        "uncounted_category",
        REBATE_SLOTS_ONLY,
        activity(0, ("slots", 1000, 0), ("live", 100000, 0)),
        1000,
        10,
        None,
    ),
    # KRW has 0 decimals: 1999 * 0.01 = 19.99 -> 19 won
    ("krw_zero_decimals", REBATE_KRW, activity(0, ("slots", 1999, 0)), 1999, 19, None),
    # 123456789 * 0.000001 = 123.456789 -> 123
    (
        "six_decimal_rate",
        REBATE_FINE_RATE,
        activity(0, ("slots", 123456789, 0)),
        123456789,
        123,
        None,
    ),
    # a stake of 0 (a free bet) is no turnover
    ("no_turnover", REBATE, activity(0, ("slots", 0, 0)), 0, 0, "no_basis"),
]


@pytest.mark.parametrize(
    ("terms", "player", "basis", "amount", "skip"),
    [case[1:] for case in REBATE_CASES],
    ids=[case[0] for case in REBATE_CASES],
)
def test_rebate_table(
    terms: Terms, player: PlayerActivity, basis: int, amount: int, skip: str | None
) -> None:
    result = calculate_rebate(player, terms)

    assert result.basis_minor == basis
    assert result.amount_minor == amount
    assert skip_code(result.skip_reason) == skip


CASHBACK_RATES = {
    (0, "slots"): "0.10",
    (0, "live"): "0.05",
    (1, "slots"): "0.12",
    (1, "live"): "0.12",
}
CASHBACK = make_terms(
    "cashback", CASHBACK_RATES, min_basis_minor=1000, min_payout_minor=100, cap_minor=50000
)
CASHBACK_KRW = make_terms("cashback", {(0, "slots"): "0.1"}, currency="KRW")
CASHBACK_EQUAL_LOSSES = make_terms("cashback", {(0, "slots"): "0.1", (0, "live"): "0.05"})

CASHBACK_CASES = [
    # loss 10000 - 4000 = 6000, * 0.10 = 600
    ("tier0_loss", CASHBACK, activity(0, ("slots", 10000, 4000)), 6000, 600, None),
    # a refund (payout equal to stake) is no loss
    ("refund_push", CASHBACK, activity(0, ("slots", 10000, 10000)), 0, 0, "no_basis"),
    # a net win of 5000 pays nothing
    ("net_win", CASHBACK, activity(0, ("slots", 10000, 15000)), -5000, 0, "no_basis"),
    # loss 900 < minimum loss 1000
    ("below_min_loss", CASHBACK, activity(0, ("slots", 10000, 9100)), 900, 0, "below_min_basis"),
    # loss 1000 * 0.10 = 100 = minimum payout
    ("at_min_loss", CASHBACK, activity(0, ("slots", 10000, 9000)), 1000, 100, None),
    # 1999 * 0.10 = 199.9 -> 199
    ("rounds_down", CASHBACK, activity(0, ("slots", 1999, 0)), 1999, 199, None),
    # loss 15000 * 0.12 = 1800
    ("tier1_rate", CASHBACK, activity(1, ("slots", 20000, 5000)), 15000, 1800, None),
    # losses 10000 and 10000, rate (0.10*10000 + 0.05*10000) / 20000 = 0.075, * 20000 = 1500
    (
        "weighted_rate",
        CASHBACK,
        activity(0, ("slots", 10000, 0), ("live", 10000, 0)),
        20000,
        1500,
        None,
    ),
    # slots loss 10000, live win 4000: net 6000 at the slots rate 0.10 = 600
    (
        "win_lowers_basis",
        CASHBACK,
        activity(0, ("slots", 10000, 0), ("live", 1000, 5000)),
        6000,
        600,
        None,
    ),
    # losses 3000 and 7000: rate (300 + 350) / 10000 = 0.065, * 10000 = 650
    (
        "uneven_losses",
        CASHBACK,
        activity(0, ("slots", 3000, 0), ("live", 7000, 0)),
        10000,
        650,
        None,
    ),
    # 1000000 * 0.12 = 120000 -> cap 50000
    ("capped", CASHBACK, activity(1, ("slots", 1000000, 0)), 1000000, 50000, None),
    # 12345 * 0.10 = 1234.5 -> 1234
    ("rounds_half_down", CASHBACK, activity(0, ("slots", 12345, 0)), 12345, 1234, None),
    # live loss 1500 * 0.05 = 75 < minimum payout 100
    ("below_min_payout", CASHBACK, activity(0, ("live", 1500, 0)), 1500, 0, "below_min_payout"),
    # KRW, 0 decimals: 12345 * 0.1 = 1234.5 -> 1234 won
    ("krw_zero_decimals", CASHBACK_KRW, activity(0, ("slots", 12345, 0)), 12345, 1234, None),
    # losses 3333 and 3334: (333.3 + 166.7) / 6667 * 6667 = 500 exactly, no rounding loss
    (
        "exact_weighted",
        CASHBACK_EQUAL_LOSSES,
        activity(0, ("slots", 3333, 0), ("live", 3334, 0)),
        6667,
        500,
        None,
    ),
    # poker has no rate: 5000 * 0 = 0
    ("no_rate_category", CASHBACK, activity(0, ("poker", 5000, 0)), 5000, 0, "zero_amount"),
]


@pytest.mark.parametrize(
    ("terms", "player", "basis", "amount", "skip"),
    [case[1:] for case in CASHBACK_CASES],
    ids=[case[0] for case in CASHBACK_CASES],
)
def test_cashback_table(
    terms: Terms, player: PlayerActivity, basis: int, amount: int, skip: str | None
) -> None:
    result = calculate_cashback(player, terms)

    assert result.basis_minor == basis
    assert result.amount_minor == amount
    assert skip_code(result.skip_reason) == skip


LOSSBACK_RATES = {(0, "slots"): "0.2", (0, "live"): "0.5"}
LOSSBACK = make_terms(
    "lossback",
    LOSSBACK_RATES,
    min_basis_minor=500,
    min_payout_minor=50,
    cap_minor=2000,
    counted={"slots"},
)
LOSSBACK_HIGH_MIN_PAYOUT = make_terms(
    "lossback", LOSSBACK_RATES, min_payout_minor=300, counted={"slots"}
)
LOSSBACK_TWO = make_terms(
    "lossback",
    {(0, "slots"): "0.2", (0, "table"): "0.1"},
    min_basis_minor=500,
    counted={"slots", "table"},
)
LOSSBACK_KRW = make_terms("lossback", {(0, "slots"): "0.2"}, currency="KRW", counted={"slots"})

LOSSBACK_CASES = [
    # 1000 * 0.2 = 200
    ("slots_loss", LOSSBACK, activity(0, ("slots", 1000, 0)), 1000, 200, None),
    # live is not a lossback category
    ("only_uncounted", LOSSBACK, activity(0, ("live", 100000, 0)), 0, 0, "no_basis"),
    # the live loss is left out: 1000 * 0.2 = 200
    (
        "uncounted_loss_ignored",
        LOSSBACK,
        activity(0, ("slots", 1000, 0), ("live", 5000, 0)),
        1000,
        200,
        None,
    ),
    # a live win is left out too: 1000 * 0.2 = 200
    (
        "uncounted_win_ignored",
        LOSSBACK,
        activity(0, ("slots", 1000, 0), ("live", 1000, 9000)),
        1000,
        200,
        None,
    ),
    ("slots_win", LOSSBACK, activity(0, ("slots", 1000, 3000)), -2000, 0, "no_basis"),
    ("below_min_loss", LOSSBACK, activity(0, ("slots", 499, 0)), 499, 0, "below_min_basis"),
    # 500 * 0.2 = 100
    ("at_min_loss", LOSSBACK, activity(0, ("slots", 500, 0)), 500, 100, None),
    # 20000 * 0.2 = 4000 -> cap 2000
    ("capped", LOSSBACK, activity(0, ("slots", 20000, 0)), 20000, 2000, None),
    # 10000 * 0.2 = 2000 = cap
    ("at_cap", LOSSBACK, activity(0, ("slots", 10000, 0)), 10000, 2000, None),
    # 2499 * 0.2 = 499.8 -> 499
    ("rounds_down", LOSSBACK, activity(0, ("slots", 2499, 0)), 2499, 499, None),
    ("refund_push", LOSSBACK, activity(0, ("slots", 4000, 4000)), 0, 0, "no_basis"),
    # tier 1 has no lossback rate
    ("no_rate_for_tier", LOSSBACK, activity(1, ("slots", 1000, 0)), 1000, 0, "zero_amount"),
    # 1000 * 0.2 = 200 < minimum payout 300
    (
        "below_min_payout",
        LOSSBACK_HIGH_MIN_PAYOUT,
        activity(0, ("slots", 1000, 0)),
        1000,
        0,
        "below_min_payout",
    ),
    # losses 1000 and 1000: rate (200 + 100) / 2000 = 0.15, * 2000 = 300
    (
        "two_counted",
        LOSSBACK_TWO,
        activity(0, ("slots", 1000, 0), ("table", 1000, 0)),
        2000,
        300,
        None,
    ),
    # slots loss 1000, table win 600: net 400 < 500
    (
        "counted_win_offsets",
        LOSSBACK_TWO,
        activity(0, ("slots", 1000, 0), ("table", 400, 1000)),
        400,
        0,
        "below_min_basis",
    ),
    # KRW, 0 decimals: 777 * 0.2 = 155.4 -> 155 won
    ("krw_zero_decimals", LOSSBACK_KRW, activity(0, ("slots", 777, 0)), 777, 155, None),
]


@pytest.mark.parametrize(
    ("terms", "player", "basis", "amount", "skip"),
    [case[1:] for case in LOSSBACK_CASES],
    ids=[case[0] for case in LOSSBACK_CASES],
)
def test_lossback_table(
    terms: Terms, player: PlayerActivity, basis: int, amount: int, skip: str | None
) -> None:
    result = calculate_lossback(player, terms)

    assert result.basis_minor == basis
    assert result.amount_minor == amount
    assert skip_code(result.skip_reason) == skip


def test_lossback_without_categories_raises() -> None:
    terms = make_terms("lossback", LOSSBACK_RATES)

    with pytest.raises(InvalidTerms, match="must list their counted categories"):
        calculate_lossback(activity(0, ("slots", 1000, 0)), terms)


def test_cap_is_recorded_in_details() -> None:
    result = calculate_rebate(activity(2, ("slots", 100000, 0)), REBATE_CAP)

    assert result.details["capped_from_minor"] == 2000
    assert result.details["rates"] == {"slots": "0.02"}


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        (make_terms("rebate", {(0, "slots"): "-0.01"}), "rate -0.01 for tier 0 slots is negative"),
        (make_terms("rebate", {(0, "slots"): "1.5"}), "rate 1.5 for tier 0 slots is above 1"),
        (
            make_terms("rebate", REBATE_RATES, min_payout_minor=100, cap_minor=50),
            "cap 50 is below the minimum payout 100",
        ),
        (make_terms("rebate", REBATE_RATES, cap_minor=0), "cap 0 must be greater than 0"),
        (make_terms("rebate", REBATE_RATES, min_basis_minor=-1), "minimum basis -1 is negative"),
        (
            make_terms("rebate", REBATE_RATES, min_payout_minor=-5),
            "minimum payout -5 is negative",
        ),
        (make_terms("lossback", LOSSBACK_RATES), "must list their counted categories"),
        (make_terms("cashback", CASHBACK_RATES, counted=set()), "counted categories are empty"),
        (make_terms("cashback", {}), "no rates are defined"),
    ],
)
def test_validate_bad_terms_raises(terms: Terms, message: str) -> None:
    with pytest.raises(InvalidTerms, match=message):
        validate_terms(terms)


def test_validate_good_terms_passes() -> None:
    assert validate_terms(CASHBACK) is CASHBACK
    assert validate_terms(LOSSBACK) is LOSSBACK


def _random_rate(generator: random.Random) -> str:
    return f"{generator.randint(0, 1_000_000) / 1_000_000:.6f}"


@pytest.mark.parametrize("seed", range(5))
def test_calculators_match_fraction_arithmetic(seed: int) -> None:
    """Whole-number arithmetic gives the floor of the exact rational amount, checked by Fraction."""
    generator = random.Random(seed)
    categories = ["slots", "live", "sports"]
    for _ in range(200):
        rates = {(0, category): _random_rate(generator) for category in categories}
        terms = make_terms("cashback", rates)
        player = activity(
            0,
            *(
                (category, generator.randint(0, 10**9), generator.randint(0, 10**9))
                for category in categories
            ),
        )
        rate = {category: Fraction(Decimal(rates[(0, category)])) for category in categories}

        rebate = calculate_rebate(player, terms)
        turnover = sum(rate[c.category] * c.stake_minor for c in player.categories)
        assert rebate.amount_minor == math.floor(turnover)

        cashback = calculate_cashback(player, terms)
        net_loss = sum(c.net_loss_minor for c in player.categories)
        losing = [c for c in player.categories if c.net_loss_minor > 0]
        if net_loss <= 0:
            assert cashback.amount_minor == 0
            continue
        weighted = sum(rate[c.category] * c.net_loss_minor for c in losing) / sum(
            c.net_loss_minor for c in losing
        )
        assert cashback.amount_minor == math.floor(weighted * net_loss)
