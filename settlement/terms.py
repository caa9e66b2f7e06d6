"""Promotion terms: loading from the database and validation before use.

Terms are stored per kind and currency. The database constraints already
reject most bad values when they are written. :func:`validate_terms` checks
them again when they are read, so terms written around the constraints are
rejected with a reason instead of being applied. So are shapes that the
constraints cannot express, such as an empty category list.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from settlement.errors import InvalidTerms
from settlement.models import PromotionRate, PromotionTerms

logger = logging.getLogger(__name__)

#: Largest rate: a credit never exceeds its basis.
MAX_RATE = Decimal(1)


@dataclass(frozen=True)
class Terms:
    """The terms of one kind in one currency.

    ``rates`` maps (VIP tier, game category) to a rate; a category with no
    rate for the player's tier earns nothing. ``counted_categories`` of None
    counts every category.
    """

    kind: str
    currency: str
    min_basis_minor: int
    min_payout_minor: int
    cap_minor: int | None
    counted_categories: frozenset[str] | None
    rates: Mapping[tuple[int, str], Decimal] = field(default_factory=dict)
    #: The common denominator of every rate: each rate times it is a whole number.
    rate_scale: int = field(init=False, repr=False, compare=False)
    #: Each rate times ``rate_scale``, exact.
    _scaled_rates: dict[tuple[int, str], int] = field(init=False, repr=False, compare=False)
    #: Each rate as decimal text, for the items' details.
    _rate_texts: dict[tuple[int, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A finite Decimal is an exact fraction. A NaN or infinite rate has none, and
        # validate_terms rejects it by name, so it is left out here.
        fractions = {key: Fraction(rate) for key, rate in self.rates.items() if rate.is_finite()}
        scale = math.lcm(1, *(fraction.denominator for fraction in fractions.values()))
        object.__setattr__(self, "rate_scale", scale)
        object.__setattr__(
            self,
            "_scaled_rates",
            {key: int(fraction * scale) for key, fraction in fractions.items()},
        )
        object.__setattr__(
            self, "_rate_texts", {key: str(rate) for key, rate in self.rates.items()}
        )

    def rate(self, vip_tier: int, category: str) -> Decimal:
        return self.rates.get((vip_tier, category), Decimal(0))

    def scaled_rate(self, vip_tier: int, category: str) -> int:
        """Return :meth:`rate` times ``rate_scale``: an exact whole number, 0 for no rate."""
        return self._scaled_rates.get((vip_tier, category), 0)

    def rate_text(self, vip_tier: int, category: str) -> str:
        """Return :meth:`rate` as decimal text."""
        return self._rate_texts.get((vip_tier, category), "0")

    def counts(self, category: str) -> bool:
        return self.counted_categories is None or category in self.counted_categories


def _categories_from_json(kind: str, currency: str, value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidTerms(
            f"{kind} terms for {currency}: counted_categories must be a non-empty list of"
            f" category names or null, got {value!r}"
        )
    for category in value:
        if not isinstance(category, str) or not category.strip():
            raise InvalidTerms(
                f"{kind} terms for {currency}: counted category {category!r} is not a name"
            )
    return frozenset(value)


def validate_terms(terms: Terms) -> Terms:
    """Return ``terms`` unchanged if they can be applied; raises InvalidTerms naming the fault."""
    label = f"{terms.kind} terms for {terms.currency}"

    if terms.min_basis_minor < 0:
        raise InvalidTerms(f"{label}: minimum basis {terms.min_basis_minor} is negative")
    if terms.min_payout_minor < 0:
        raise InvalidTerms(f"{label}: minimum payout {terms.min_payout_minor} is negative")
    if terms.cap_minor is not None and terms.cap_minor < terms.min_payout_minor:
        raise InvalidTerms(
            f"{label}: cap {terms.cap_minor} is below the minimum payout {terms.min_payout_minor}"
        )
    if terms.cap_minor is not None and terms.cap_minor <= 0:
        raise InvalidTerms(f"{label}: cap {terms.cap_minor} must be greater than 0")

    if terms.kind == "lossback" and terms.counted_categories is None:
        raise InvalidTerms(f"{label}: lossback terms must list their counted categories")
    if terms.counted_categories is not None and not terms.counted_categories:
        raise InvalidTerms(f"{label}: counted categories are empty, so nothing would count")

    if not terms.rates:
        raise InvalidTerms(f"{label}: no rates are defined")
    for (vip_tier, category), rate in sorted(terms.rates.items()):
        if not rate.is_finite() or rate < 0:
            raise InvalidTerms(f"{label}: rate {rate} for tier {vip_tier} {category} is negative")
        if rate > MAX_RATE:
            raise InvalidTerms(
                f"{label}: rate {rate} for tier {vip_tier} {category} is above {MAX_RATE}"
            )
    return terms


def load_terms(session: Session, kind: str) -> dict[str, Terms | InvalidTerms]:
    """Return the active terms of ``kind`` by currency, or the reason they were rejected.

    Rejected terms are logged at ERROR here, once per load.
    """
    rows = session.scalars(
        select(PromotionTerms).where(PromotionTerms.kind == kind, PromotionTerms.active)
    ).all()
    rates_by_terms: dict[int, dict[tuple[int, str], Decimal]] = {row.id: {} for row in rows}
    if rows:
        rate_rows = session.execute(
            select(
                PromotionRate.terms_id,
                PromotionRate.vip_tier,
                PromotionRate.game_category,
                PromotionRate.rate,
            ).where(PromotionRate.terms_id.in_(list(rates_by_terms)))
        )
        for terms_id, vip_tier, category, rate in rate_rows:
            rates_by_terms[terms_id][(vip_tier, category)] = Decimal(rate)

    loaded: dict[str, Terms | InvalidTerms] = {}
    for row in rows:
        try:
            terms = Terms(
                kind=row.kind,
                currency=row.currency,
                min_basis_minor=row.min_basis_minor,
                min_payout_minor=row.min_payout_minor,
                cap_minor=row.cap_minor,
                counted_categories=_categories_from_json(
                    row.kind, row.currency, row.counted_categories
                ),
                rates=rates_by_terms[row.id],
            )
            loaded[row.currency] = validate_terms(terms)
        except InvalidTerms as exc:
            logger.error("promotion terms %s rejected: %s", row.id, exc)
            loaded[row.currency] = exc
    return loaded
