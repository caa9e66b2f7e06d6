"""Rows for settlement tests: currencies, players with wallets, bets and promotion terms."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import transaction
from outbox.models import WalletOutbox
from settlement.models import (
    Bet,
    Currency,
    LedgerEntry,
    Player,
    PromotionRate,
    PromotionTerms,
    SettlementItem,
    SettlementRun,
    Wallet,
)

#: Daily period 2026-12-03 and weekly period 2026-W48 (UTC), each with a time inside it.
DAY = "2026-12-03"
IN_DAY = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
WEEK = "2026-W48"
IN_WEEK = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def add_currencies(session: Session, **minor_units: int) -> None:
    for code, units in minor_units.items():
        session.add(Currency(code=code, minor_units=units))
    session.flush()


def add_player(
    session: Session,
    currency: str = "PHP",
    vip_tier: int = 0,
    *,
    status: str = "active",
    wallet_status: str | None = "active",
    balance_minor: int = 0,
) -> int:
    """Add a player and, unless ``wallet_status`` is None, their wallet; returns the player id."""
    player = Player(currency=currency, vip_tier=vip_tier, status=status)
    session.add(player)
    session.flush()
    if wallet_status is not None:
        session.add(
            Wallet(
                player_id=player.id,
                currency=currency,
                status=wallet_status,
                balance_minor=balance_minor,
            )
        )
        session.flush()
    return player.id


def add_bet(
    session: Session,
    player_id: int,
    stake_minor: int,
    payout_minor: int = 0,
    *,
    category: str = "slots",
    status: str = "settled",
    settled_at: datetime = IN_DAY,
) -> None:
    session.add(
        Bet(
            player_id=player_id,
            game_category=category,
            stake_minor=stake_minor,
            payout_minor=payout_minor,
            status=status,
            placed_at=settled_at,
            settled_at=settled_at,
        )
    )
    session.flush()


def add_terms(
    session: Session,
    kind: str,
    currency: str = "PHP",
    rates: Mapping[tuple[int, str], str] | None = None,
    *,
    min_basis_minor: int = 0,
    min_payout_minor: int = 0,
    cap_minor: int | None = None,
    counted_categories: object = None,
) -> int:
    terms = PromotionTerms(
        kind=kind,
        currency=currency,
        min_basis_minor=min_basis_minor,
        min_payout_minor=min_payout_minor,
        cap_minor=cap_minor,
        counted_categories=counted_categories,
    )
    session.add(terms)
    session.flush()
    for (vip_tier, category), rate in (rates or {(0, "slots"): "0.01"}).items():
        session.add(
            PromotionRate(
                terms_id=terms.id, vip_tier=vip_tier, game_category=category, rate=Decimal(rate)
            )
        )
    session.flush()
    return terms.id


def ledger_rows(player_id: int | None = None) -> list[LedgerEntry]:
    with transaction() as session:
        query = select(LedgerEntry).order_by(LedgerEntry.id)
        if player_id is not None:
            query = query.where(LedgerEntry.player_id == player_id)
        return list(session.scalars(query))


def ledger_count_by_player() -> dict[int, int]:
    with transaction() as session:
        rows = session.execute(
            select(LedgerEntry.player_id, func.count()).group_by(LedgerEntry.player_id)
        )
        return {player_id: count for player_id, count in rows}


def balance(player_id: int) -> int:
    with transaction() as session:
        return (
            session.scalar(select(Wallet.balance_minor).where(Wallet.player_id == player_id)) or 0
        )


def outbox_rows() -> list[WalletOutbox]:
    with transaction() as session:
        return list(session.scalars(select(WalletOutbox).order_by(WalletOutbox.id)))


def runs() -> list[SettlementRun]:
    with transaction() as session:
        return list(session.scalars(select(SettlementRun).order_by(SettlementRun.id)))


def items(run_id: int) -> dict[int, SettlementItem]:
    with transaction() as session:
        query = select(SettlementItem).where(SettlementItem.run_id == run_id)
        return {item.player_id: item for item in session.scalars(query)}
