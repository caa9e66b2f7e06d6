"""Settlement runs against a real database: outcomes, isolation, re-runs and bad input."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import transaction
from settlement.errors import (
    SettlementNonDelivery,
    SettlementPartialDelivery,
    SettlementRunBusy,
)
from settlement.ledger import CREDIT_EVENT_NAMESPACE, Credit, CreditResult, LedgerGateway
from settlement.locking import run_lock_key
from settlement.models import Bet, Player, PromotionRate, PromotionTerms, SettlementItem
from settlement.records import void_item
from settlement.runner import plan_settlement, run_settlement
from tests.conftest import point_settings_at
from tests.settlement.conftest import RejectingGateway
from tests.settlement.seed import (
    DAY,
    IN_DAY,
    IN_WEEK,
    WEEK,
    add_bet,
    add_player,
    add_terms,
    balance,
    items,
    ledger_count_by_player,
    ledger_rows,
    outbox_rows,
    runs,
)


def seed_rebate_players(count: int, **player_options: object) -> list[int]:
    """Add rebate terms (1% on slots) and ``count`` players who each staked 10000 + id."""
    with transaction() as session:
        add_terms(session, "rebate")
        player_ids = [add_player(session, **player_options) for _ in range(count)]  # type: ignore[arg-type]
        for player_id in player_ids:
            add_bet(session, player_id, 10000 + player_id * 100)
    return player_ids


def test_run_no_bets_is_empty(world: str) -> None:
    with transaction() as session:
        add_terms(session, "rebate")
        add_player(session)

    outcome = run_settlement("rebate", DAY)

    assert outcome.status == "empty"
    assert outcome.ok
    assert outcome.counts["eligible"] == 0
    assert ledger_rows() == []
    [run] = runs()
    assert run.status == "empty"
    assert run.eligible_count == 0
    assert run.finished_at is not None


def test_run_all_credits_fail_is_non_delivery(pg_world: str) -> None:
    player_ids = seed_rebate_players(3)
    gateway = RejectingGateway()

    outcome = run_settlement("rebate", DAY, gateway=gateway)

    assert outcome.status == "failed"
    assert not outcome.ok
    failure = outcome.failure()
    assert type(failure) is SettlementNonDelivery
    assert "failed players: 1, 2, 3" in str(failure)
    assert failure.summary["counts"]["failed"] == 3
    assert ledger_rows() == []
    assert outbox_rows() == []
    assert [balance(pid) for pid in player_ids] == [0, 0, 0]
    [run] = runs()
    assert run.status == "failed"
    assert run.failed_count == 3
    assert run.credited_count == 0
    assert run.failed_player_ids == player_ids
    item = items(run.id)[player_ids[0]]
    assert item.status == "failed"
    assert item.error == "WalletServiceDown: wallet service refused players [1]"


def test_run_mixed_failure_is_partial(world: str) -> None:
    point_settings_at(SETTLEMENT_BATCH_SIZE="4")
    player_ids = seed_rebate_players(6)
    gateway = RejectingGateway(reject={2, 5})

    outcome = run_settlement("rebate", DAY, gateway=gateway)

    assert outcome.status == "partial"
    failure = outcome.failure()
    assert isinstance(failure, SettlementPartialDelivery)
    assert "failed players: 2, 5" in str(failure)
    assert failure.summary["failed_player_ids"] == [2, 5]
    assert outcome.counts == {
        "eligible": 6,
        "credited": 4,
        "credited_earlier": 0,
        "skipped": 0,
        "failed": 2,
        "voided": 0,
        "pending": 0,
    }
    # player n staked 10000 + 100n, so the 1% rebate is 100 + n
    assert ledger_count_by_player() == {1: 1, 3: 1, 4: 1, 6: 1}
    assert [balance(pid) for pid in player_ids] == [101, 0, 103, 104, 0, 106]
    assert outcome.details["credited_amount_minor"] == {"PHP": 414}
    # Batches are credited concurrently, so events of different wallets may be in any order.
    events = {event.payload["player_id"]: event for event in outbox_rows()}
    assert sorted(events) == [1, 3, 4, 6]
    assert events[1].event_type == "wallet.credited"
    assert events[1].event_id == uuid.uuid5(CREDIT_EVENT_NAMESPACE, "rebate:2026-12-03:1")
    assert events[1].payload["amount_minor"] == 101
    assert events[1].payload["balance_minor"] == 101
    [run] = runs()
    assert run.status == "partial"
    assert run.failed_player_ids == [2, 5]
    assert run.credited_amount_minor == {"PHP": 414}


def test_rerun_after_partial_attempts_failed_only(world: str) -> None:
    point_settings_at(SETTLEMENT_BATCH_SIZE="4")
    seed_rebate_players(6)
    run_settlement("rebate", DAY, gateway=RejectingGateway(reject={2, 5}))

    second_gateway = RejectingGateway(reject=set())
    second = run_settlement("rebate", DAY, gateway=second_gateway)

    assert second_gateway.attempted == {2, 5}
    assert second.status == "succeeded"
    assert second.counts["credited"] == 6
    assert second.counts["credited_earlier"] == 4
    assert second.details["credited_amount_minor"] == {"PHP": 207}
    assert ledger_count_by_player() == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1}

    third_gateway = RejectingGateway(reject=set())
    third = run_settlement("rebate", DAY, gateway=third_gateway)

    assert third_gateway.batches == []
    assert third.status == "succeeded"
    assert third.counts["credited_earlier"] == 6
    assert third.details["credited_amount_minor"] == {}
    assert len(ledger_rows()) == 6
    assert len(outbox_rows()) == 6
    third_items = items(third.details["run_id"])
    assert third_items[1].reason == "credited_earlier: credited by run 1"
    assert third_items[2].reason == "credited_earlier: credited by run 2"


def test_dry_run_applies_wallet_checks(world: str) -> None:
    with transaction() as session:
        add_terms(session, "rebate")
        active = add_player(session)
        closed = add_player(session, wallet_status="closed")
        suspended = add_player(session, wallet_status="suspended")
        walletless = add_player(session, wallet_status=None)
        for player_id in (active, closed, suspended, walletless):
            add_bet(session, player_id, 5000)

    plan = plan_settlement("rebate", DAY)

    by_player = {item.player_id: item for item in plan.items}
    assert by_player[active].status == "pending"
    assert by_player[closed].status == "skipped"
    assert by_player[closed].reason == "wallet_closed: wallet 2 is closed"
    assert by_player[suspended].status == "skipped"
    assert by_player[suspended].reason == "wallet_suspended: wallet 3 is suspended"
    assert by_player[walletless].status == "failed"
    assert by_player[walletless].error == f"wallet not found for player {walletless}"
    assert ledger_rows() == []


def test_run_closed_and_suspended_wallets_skipped(world: str) -> None:
    with transaction() as session:
        add_terms(session, "rebate")
        active = add_player(session)
        closed = add_player(session, wallet_status="closed")
        suspended = add_player(session, wallet_status="suspended")
        for player_id in (active, closed, suspended):
            add_bet(session, player_id, 5000)

    outcome = run_settlement("rebate", DAY)

    assert outcome.status == "succeeded"
    assert outcome.counts["credited"] == 1
    assert outcome.counts["skipped"] == 2
    run_items = items(outcome.details["run_id"])
    assert run_items[closed].reason == "wallet_closed: wallet 2 is closed"
    assert run_items[suspended].reason == "wallet_suspended: wallet 3 is suspended"
    assert ledger_count_by_player() == {active: 1}
    assert balance(closed) == 0


def test_run_missing_wallet_fails_item(world: str) -> None:
    with transaction() as session:
        add_terms(session, "rebate")
        with_wallet = add_player(session)
        without_wallet = add_player(session, wallet_status=None)
        add_bet(session, with_wallet, 5000)
        add_bet(session, without_wallet, 5000)

    outcome = run_settlement("rebate", DAY)

    assert outcome.status == "partial"
    item = items(outcome.details["run_id"])[without_wallet]
    assert item.status == "failed"
    assert item.error == f"wallet not found for player {without_wallet}"
    assert ledger_count_by_player() == {with_wallet: 1}


def test_run_amounts_from_real_bets(world: str) -> None:
    with transaction() as session:
        add_terms(session, "rebate", rates={(0, "slots"): "0.01", (1, "live"): "0.005"})
        add_terms(session, "rebate", "KRW", rates={(0, "slots"): "0.015"})
        php = add_player(session)
        vip = add_player(session, vip_tier=1)
        krw = add_player(session, "KRW")
        # 12345 settled; voided, cancelled and next-day bets do not count: 123.45 -> 123
        add_bet(session, php, 12345)
        add_bet(session, php, 90000, status="voided")
        add_bet(session, php, 80000, status="cancelled")
        add_bet(session, php, 70000, settled_at=IN_DAY.replace(day=4))
        # 33333 * 0.005 = 166.665 -> 166
        add_bet(session, vip, 33333, 40000, category="live")
        # 0-decimal KRW: 9999 * 0.015 = 149.985 -> 149 won
        add_bet(session, krw, 9999)

    outcome = run_settlement("rebate", DAY)

    assert outcome.status == "succeeded"
    assert [(row.player_id, row.amount_minor, row.currency) for row in ledger_rows()] == [
        (php, 123, "PHP"),
        (vip, 166, "PHP"),
        (krw, 149, "KRW"),
    ]
    assert outcome.details["credited_amount_minor"] == {"PHP": 289, "KRW": 149}
    run_items = items(outcome.details["run_id"])
    assert run_items[php].basis_minor == 12345
    assert run_items[php].idempotency_key == f"rebate:2026-12-03:{php}"


def test_run_weekly_cashback_and_lossback(world: str) -> None:
    with transaction() as session:
        add_terms(session, "cashback", rates={(0, "slots"): "0.1", (0, "live"): "0.1"})
        add_terms(
            session,
            "lossback",
            rates={(0, "slots"): "0.2", (0, "live"): "0.2"},
            counted_categories=["live"],
        )
        player = add_player(session)
        add_bet(session, player, 10000, 2000, settled_at=IN_WEEK)
        add_bet(session, player, 5000, 0, category="live", settled_at=IN_WEEK)

    cashback = run_settlement("cashback", WEEK)
    lossback = run_settlement("lossback", WEEK)

    # cashback: loss 8000 + 5000 = 13000 * 0.1 = 1300; lossback: live 5000 * 0.2 = 1000
    assert cashback.status == "succeeded"
    assert lossback.status == "succeeded"
    assert [(row.idempotency_key, row.amount_minor) for row in ledger_rows()] == [
        (f"cashback:2026-W48:{player}", 1300),
        (f"lossback:2026-W48:{player}", 1000),
    ]
    assert balance(player) == 2300


class TerminatingGateway(LedgerGateway):
    """Kills its own database connection on the first ``failures`` calls, then credits."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def credit_batch(self, session: Session, credits: Sequence[Credit]) -> dict[int, CreditResult]:
        self.calls += 1
        if self.calls <= self.failures:
            session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return super().credit_batch(session, credits)


def test_lost_connection_is_retried(pg_world: str) -> None:
    [player] = seed_rebate_players(1)
    gateway = TerminatingGateway(failures=1)

    outcome = run_settlement("rebate", DAY, gateway=gateway)

    assert outcome.status == "succeeded"
    assert gateway.calls == 2
    assert ledger_count_by_player() == {player: 1}
    assert items(outcome.details["run_id"])[player].attempts == 2


def test_lost_connection_every_attempt_fails_item(pg_world: str) -> None:
    [player] = seed_rebate_players(1)
    gateway = TerminatingGateway(failures=100)

    outcome = run_settlement("rebate", DAY, gateway=gateway)

    assert outcome.status == "failed"
    assert gateway.calls == 4
    item = items(outcome.details["run_id"])[player]
    assert item.status == "failed"
    assert item.attempts == 4
    assert item.error is not None
    assert item.error.startswith("OperationalError: ")
    assert ledger_rows() == []


def test_dry_run_writes_nothing(world: str) -> None:
    seed_rebate_players(2)

    plan = plan_settlement("rebate", DAY)

    assert plan.period.key == DAY
    assert [(item.player_id, item.amount_minor, item.status) for item in plan.items] == [
        (1, 101, "pending"),
        (2, 102, "pending"),
    ]
    assert runs() == []
    assert ledger_rows() == []


def test_invalid_terms_in_database_fail_items(world: str) -> None:
    with transaction() as session:
        add_terms(session, "cashback", counted_categories="slots")
        player = add_player(session)
        add_bet(session, player, 10000, settled_at=IN_WEEK)

    outcome = run_settlement("cashback", WEEK)

    assert outcome.status == "failed"
    item = items(outcome.details["run_id"])[player]
    assert item.status == "failed"
    assert item.error == (
        "cashback terms for PHP: counted_categories must be a non-empty list of category"
        " names or null, got 'slots'"
    )
    assert ledger_rows() == []


def test_missing_terms_skip_player(world: str) -> None:
    with transaction() as session:
        add_terms(session, "rebate")
        krw = add_player(session, "KRW")
        add_bet(session, krw, 10000)

    outcome = run_settlement("rebate", DAY)

    assert outcome.status == "succeeded"
    assert (
        items(outcome.details["run_id"])[krw].reason == "no_terms: no active rebate terms for KRW"
    )
    assert ledger_rows() == []


def _insert_rejected(session: Session, row: object) -> None:
    with pytest.raises(IntegrityError), session.begin_nested():
        session.add(row)
        session.flush()


def test_bad_input_rejected_and_nothing_credited(world: str) -> None:
    with transaction() as session:
        terms_id = add_terms(session, "rebate")
        player = add_player(session)
        placed = {"placed_at": IN_DAY, "settled_at": IN_DAY, "game_category": "slots"}

        # negative stake
        _insert_rejected(
            session,
            Bet(player_id=player, stake_minor=-100, payout_minor=0, status="settled", **placed),
        )
        # a payout without a stake, so without a real bet
        _insert_rejected(
            session,
            Bet(player_id=player, stake_minor=0, payout_minor=500, status="settled", **placed),
        )
        # a bet of a player that does not exist
        _insert_rejected(
            session, Bet(player_id=999, stake_minor=100, payout_minor=0, status="settled", **placed)
        )
        # a player in an unknown currency
        _insert_rejected(session, Player(currency="XXX", vip_tier=0, status="active"))
        # a negative rate
        _insert_rejected(
            session,
            PromotionRate(terms_id=terms_id, vip_tier=1, game_category="live", rate=-0.01),
        )
        # a cap below the minimum payout
        _insert_rejected(
            session,
            PromotionTerms(
                kind="cashback",
                currency="PHP",
                min_basis_minor=0,
                min_payout_minor=500,
                cap_minor=100,
            ),
        )

    outcome = run_settlement("rebate", DAY)

    assert outcome.status == "empty"
    assert ledger_rows() == []
    with transaction() as session:
        assert session.scalars(select(Bet)).all() == []


def test_void_failed_item_is_not_paid_later(world: str) -> None:
    seed_rebate_players(3)
    first = run_settlement("rebate", DAY, gateway=RejectingGateway(reject={2}))
    run_id = first.details["run_id"]

    voided = void_item_for(run_id, 2)

    assert voided.status == "voided"
    assert voided.reason == "voided by tester: duplicate account"
    [run] = runs()
    assert run.failed_count == 0
    assert run.voided_count == 1
    assert run.failed_player_ids == []

    gateway = RejectingGateway(reject=set())
    second = run_settlement("rebate", DAY, gateway=gateway)

    assert gateway.batches == []
    assert second.status == "succeeded"
    assert second.counts["voided"] == 1
    assert items(second.details["run_id"])[2].reason == f"voided in run {run_id}"
    assert ledger_count_by_player() == {1: 1, 3: 1}


def void_item_for(run_id: int, player_id: int) -> SettlementItem:
    from app.db import get_engine

    return void_item(get_engine(), run_id, player_id, "duplicate account", "tester")


def test_void_credited_item_rejected(world: str) -> None:
    from app.db import get_engine
    from settlement.records import VoidRejected

    seed_rebate_players(1)
    outcome = run_settlement("rebate", DAY)

    with pytest.raises(VoidRejected, match="is credited; only failed items can be voided"):
        void_item(get_engine(), outcome.details["run_id"], 1, "oops", "tester")
    with pytest.raises(VoidRejected, match="a void needs a non-empty --reason"):
        void_item(get_engine(), outcome.details["run_id"], 1, "  ", "tester")


def test_run_lock_held_raises_busy(pg_world: str) -> None:
    seed_rebate_players(1)
    holder = create_engine(pg_world)
    try:
        with holder.connect() as connection:
            connection.execute(
                text("SELECT pg_advisory_lock(:key)"), {"key": run_lock_key("rebate", DAY)}
            )

            with pytest.raises(SettlementRunBusy, match="already being run by another process"):
                run_settlement("rebate", DAY, lock_wait_seconds=0.3)
    finally:
        holder.dispose()

    assert runs() == []
    assert ledger_rows() == []
