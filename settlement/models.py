"""Players, wallets, the ledger, bets, promotion terms and settlement records.

Money columns hold integer minor units (cents for a 2-decimal currency), so
sums are exact on SQLite and PostgreSQL alike. Code converts them to Decimal
with the currency's ``minor_units``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime
from outbox.models import BigId

SETTLEMENT_KINDS = ("rebate", "cashback", "lossback")
WALLET_STATUSES = ("active", "suspended", "closed")
BET_STATUSES = ("settled", "voided", "cancelled")
RUN_STATUSES = ("running", "succeeded", "empty", "partial", "failed", "inconsistent")
ITEM_STATUSES = ("pending", "credited", "skipped", "failed", "voided")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Currency(Base):
    __tablename__ = "currencies"
    __table_args__ = (CheckConstraint("minor_units IN (0, 2, 3)", name="minor_units"),)

    code: Mapped[str] = mapped_column(String(3), primary_key=True)
    minor_units: Mapped[int] = mapped_column(SmallInteger, nullable=False)


class Player(Base):
    __tablename__ = "players"
    __table_args__ = (CheckConstraint("vip_tier >= 0", name="vip_tier"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    currency: Mapped[str] = mapped_column(ForeignKey("currencies.code"), nullable=False)
    vip_tier: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="active")
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, nullable=False, server_default=func.current_timestamp()
    )


class Wallet(Base):
    __tablename__ = "wallets"
    __table_args__ = (CheckConstraint(_in("status", WALLET_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), nullable=False, unique=True)
    currency: Mapped[str] = mapped_column(ForeignKey("currencies.code"), nullable=False)
    balance_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="active")
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, nullable=False, server_default=func.current_timestamp()
    )


class LedgerEntry(Base):
    """One credit or debit of a wallet; the idempotency key makes a credit happen once."""

    __tablename__ = "wallet_ledger"
    __table_args__ = (
        CheckConstraint("amount_minor <> 0", name="amount_nonzero"),
        Index("ix_wallet_ledger_wallet_id_id", "wallet_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallets.id"), nullable=False)
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), nullable=False)
    #: Positive for a credit, negative for a debit, in minor units.
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(ForeignKey("currencies.code"), nullable=False)
    entry_type: Mapped[str] = mapped_column(String(32), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    reference: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, nullable=False, server_default=func.current_timestamp()
    )


class Bet(Base):
    __tablename__ = "bets"
    __table_args__ = (
        CheckConstraint("stake_minor >= 0", name="stake_not_negative"),
        CheckConstraint("payout_minor >= 0", name="payout_not_negative"),
        CheckConstraint("stake_minor > 0 OR payout_minor = 0", name="payout_needs_stake"),
        CheckConstraint(_in("status", BET_STATUSES), name="status"),
        Index("ix_bets_settled_at_player_id", "settled_at", "player_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), nullable=False)
    game_category: Mapped[str] = mapped_column(String(32), nullable=False)
    stake_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    payout_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PromotionTerms(Base):
    """Per kind and currency: minimums, cap and, for lossback, the counted categories."""

    __tablename__ = "promotion_terms"
    __table_args__ = (
        UniqueConstraint("kind", "currency"),
        CheckConstraint(_in("kind", SETTLEMENT_KINDS), name="kind"),
        CheckConstraint("min_basis_minor >= 0", name="min_basis"),
        CheckConstraint("min_payout_minor >= 0", name="min_payout"),
        CheckConstraint("cap_minor IS NULL OR cap_minor >= min_payout_minor", name="cap"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    currency: Mapped[str] = mapped_column(ForeignKey("currencies.code"), nullable=False)
    min_basis_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    min_payout_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: Largest credit per player per period; NULL means no cap.
    cap_minor: Mapped[int | None] = mapped_column(BigInteger)
    #: Game categories counted; NULL counts every category.
    counted_categories: Mapped[list[str] | None] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


class PromotionRate(Base):
    __tablename__ = "promotion_rates"
    __table_args__ = (
        UniqueConstraint("terms_id", "vip_tier", "game_category"),
        CheckConstraint("rate >= 0 AND rate <= 1", name="rate"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    terms_id: Mapped[int] = mapped_column(ForeignKey("promotion_terms.id"), nullable=False)
    vip_tier: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    game_category: Mapped[str] = mapped_column(String(32), nullable=False)
    rate: Mapped[Decimal] = mapped_column(Numeric(9, 6, asdecimal=True), nullable=False)


class SettlementRun(Base):
    __tablename__ = "settlement_runs"
    __table_args__ = (
        CheckConstraint(_in("kind", SETTLEMENT_KINDS), name="kind"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        Index("ix_settlement_runs_kind_period_key", "kind", "period_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    #: ISO date for daily periods, ISO week (2026-W49) for weekly ones.
    period_key: Mapped[str] = mapped_column(String(16), nullable=False)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    period_end: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    eligible_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    credited_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    skipped_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    failed_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    voided_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    credited_amount_minor: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False)
    failed_player_ids: Mapped[list[int]] = mapped_column(JSON, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    hostname: Mapped[str | None] = mapped_column(String(255))
    task_id: Mapped[str | None] = mapped_column(String(64))


class SettlementItem(Base):
    """One eligible player in one run, with the outcome of its credit."""

    __tablename__ = "settlement_items"
    __table_args__ = (
        UniqueConstraint("run_id", "player_id"),
        CheckConstraint(_in("status", ITEM_STATUSES), name="status"),
        Index("ix_settlement_items_kind_period_key_player_id", "kind", "period_key", "player_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    period_key: Mapped[str] = mapped_column(String(16), nullable=False)
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), nullable=False)
    currency: Mapped[str] = mapped_column(ForeignKey("currencies.code"), nullable=False)
    basis_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, nullable=False, server_default=func.current_timestamp()
    )
