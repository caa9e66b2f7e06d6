"""Fixtures of the settlement tests: seeded currencies and wallet gateways that fail on purpose."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy.orm import Session

from app.db import transaction
from settlement.ledger import Credit, CreditResult, LedgerGateway
from tests.settlement.seed import add_currencies


class WalletServiceDown(RuntimeError):
    """The failure a test gateway raises for the players it rejects."""


class RejectingGateway(LedgerGateway):
    """The real ledger gateway, except that a batch containing a rejected player raises.

    ``reject`` None rejects every player. ``batches`` records the player ids of
    every batch the gateway was given, so tests can see what was attempted.
    """

    def __init__(self, reject: set[int] | None = None) -> None:
        self.reject = reject
        self.batches: list[list[int]] = []

    def credit_batch(self, session: Session, credits: Sequence[Credit]) -> dict[int, CreditResult]:
        player_ids = [credit.player_id for credit in credits]
        self.batches.append(player_ids)
        rejected = [pid for pid in player_ids if self.reject is None or pid in self.reject]
        if rejected:
            raise WalletServiceDown(f"wallet service refused players {rejected}")
        return super().credit_batch(session, credits)

    @property
    def attempted(self) -> set[int]:
        return {player_id for batch in self.batches for player_id in batch}


@pytest.fixture
def pg_world(pg_database_url: str) -> Iterator[str]:
    """PostgreSQL with PHP (2 decimals), KRW (0) and KWD (3) currencies."""
    with transaction() as session:
        add_currencies(session, PHP=2, KRW=0, KWD=3)
    yield pg_database_url


@pytest.fixture
def world(database_url: str) -> Iterator[str]:
    """SQLite and PostgreSQL in turn, with PHP, KRW and KWD currencies."""
    with transaction() as session:
        add_currencies(session, PHP=2, KRW=0, KWD=3)
    yield database_url
