"""Settlement under faults: a lost database, two triggers at once, a message delivered twice."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import database_now, transaction
from settlement import runner
from settlement.errors import SettlementNonDelivery
from settlement.ledger import Credit, CreditResult, LedgerGateway
from settlement.models import LedgerEntry, SettlementItem, SettlementRun, Wallet
from settlement.periods import resolve_period
from settlement.records import ABANDONED_RUN_ERROR
from tests.conftest import point_settings_at
from tests.faults.conftest import process_env
from tests.faults.faults_testing import make_app, start_worker
from tests.faults.servers import (
    OutputLog,
    PrivateRedis,
    TcpProxy,
    celery_command,
    managed,
    run_command,
    wait_until,
)
from tests.settlement.seed import DAY, IN_DAY, add_bet, add_currencies, add_player, add_terms

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

PLAYERS = 60
BATCH_SIZE = 10
#: Stake of each seeded bet, in minor units; the 1% rebate of it is 100.
STAKE_MINOR = 10_000
REBATE_MINOR = 100
TASK = "tasks.settlement.rebate"
#: Seconds a test waits for workers to finish settlement runs.
SETTLE_TIMEOUT_SECONDS = 90


def seed_players(count: int = PLAYERS, settled_at: Any = IN_DAY) -> list[int]:
    """Add PHP rebate terms and ``count`` active players with one settled slots bet each."""
    with transaction() as session:
        add_currencies(session, PHP=2)
        add_terms(session, "rebate")
        players = []
        for _ in range(count):
            player = add_player(session)
            add_bet(session, player, STAKE_MINOR, settled_at=settled_at)
            players.append(player)
        return players


def ledger_counts() -> dict[int, int]:
    with transaction() as session:
        query = select(LedgerEntry.player_id, func.count()).group_by(LedgerEntry.player_id)
        return {player_id: count for player_id, count in session.execute(query)}


def money_totals() -> dict[str, int]:
    """Return the ledger sum, the credited items' sum and the wallet balances' sum."""
    with transaction() as session:
        ledger = session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)))
        credited = session.scalar(
            select(func.coalesce(func.sum(SettlementItem.amount_minor), 0)).where(
                SettlementItem.status == "credited"
            )
        )
        balances = session.scalar(select(func.coalesce(func.sum(Wallet.balance_minor), 0)))
        events = session.scalar(text("SELECT count(*) FROM wallet_outbox"))
    return {
        "ledger": int(ledger),
        "credited_items": int(credited),
        "balances": int(balances),
        "wallet_events": int(events),
    }


def all_runs() -> list[SettlementRun]:
    with transaction() as session:
        return list(session.scalars(select(SettlementRun).order_by(SettlementRun.id)))


class CuttingGateway(LedgerGateway):
    """The real gateway, except that batch ``cut_at`` first loses the database.

    The proxy closes every connection and rejects new ones, as when the
    database server goes away in the middle of a run.
    """

    def __init__(self, proxy: TcpProxy, cut_at: int) -> None:
        self.proxy = proxy
        self.cut_at = cut_at
        self.calls = 0

    def credit_batch(self, session: Session, credits: Sequence[Credit]) -> dict[int, CreditResult]:
        self.calls += 1
        if self.calls == self.cut_at:
            self.proxy.reject_new_connections = True
            self.proxy.cut()
        return super().credit_batch(session, credits)


def test_database_lost_mid_run_rerun_credits_once(
    postgres_proxy: TcpProxy, output_log: OutputLog, monkeypatch: Any
) -> None:
    point_settings_at(SETTLEMENT_BATCH_SIZE=str(BATCH_SIZE))
    players = seed_players()
    app = make_app()
    gateway = CuttingGateway(postgres_proxy, cut_at=3)
    monkeypatch.setattr(runner, "LedgerGateway", lambda: gateway)

    first = app.tasks[TASK].apply(kwargs={"period": DAY})

    assert first.state == "FAILURE"
    assert isinstance(first.result, SettlementNonDelivery)
    assert f"settlement rebate {DAY} run 1 failed" in str(first.result)
    output_log.add_text("settlement-db-lost", str(first.result))
    postgres_proxy.reject_new_connections = False
    credited_before_rerun = ledger_counts()
    assert set(credited_before_rerun.values()) == {1}
    # Batches 1 and 2 are credited at once, and batch 3 cuts the database. Batch 3
    # starts after one of them committed, and the other committed or rolled back whole.
    assert len(credited_before_rerun) in (BATCH_SIZE, 2 * BATCH_SIZE)
    monkeypatch.setattr(runner, "LedgerGateway", LedgerGateway)

    second = app.tasks[TASK].apply(kwargs={"period": DAY})

    assert second.state == "SUCCESS", second.result
    assert ledger_counts() == dict.fromkeys(players, 1)
    totals = money_totals()
    assert totals["ledger"] == PLAYERS * REBATE_MINOR
    assert totals["credited_items"] == totals["ledger"]
    assert totals["balances"] == totals["ledger"]
    assert totals["wallet_events"] == PLAYERS
    assert second.result["counts"]["credited"] == PLAYERS
    assert second.result["counts"]["credited_earlier"] == len(credited_before_rerun)
    assert second.result["counts"]["failed"] == 0
    statuses = {run.id: (run.status, run.error) for run in all_runs()}
    assert statuses[1] == ("failed", ABANDONED_RUN_ERROR)
    assert statuses[2] == ("succeeded", None)


def finished_runs(count: int) -> list[SettlementRun] | None:
    runs = all_runs()
    done = [run for run in runs if run.status not in ("running", "pending")]
    return runs if len(runs) >= count and len(done) == len(runs) else None


def test_beat_and_call_same_period_credit_once(
    fault_db: str, private_redis: PrivateRedis, output_log: OutputLog
) -> None:
    point_settings_at(BROKER_URL=private_redis.url(), SETTLEMENT_BATCH_SIZE=str(BATCH_SIZE))
    with transaction() as session:
        now = database_now(session)
    period = resolve_period("rebate", None, now=now, zone=make_app_zone(), lossback_period="weekly")
    players = seed_players(settled_at=period.start + timedelta(hours=1))
    app = make_app()
    workers = [
        start_worker(
            output_log, f"settle-{index}@faults", "settlement", BROKER_URL=private_redis.url()
        )
        for index in range(2)
    ]

    with managed(workers[0]), managed(workers[1]):
        # Beat sends the task with no period (the last complete one) to the settlement queue.
        app.send_task(TASK, queue="settlement")
        called = run_command(
            celery_command(
                "-A",
                "app",
                "call",
                TASK,
                "--queue",
                "settlement",
                "--kwargs",
                json.dumps({"period": period.key}),
            ),
            process_env(BROKER_URL=private_redis.url(), RESULT_BACKEND="disabled"),
            output_log,
            "celery-call",
        )
        assert called.returncode == 0, called.stderr
        runs = wait_until(lambda: finished_runs(2), SETTLE_TIMEOUT_SECONDS, "two runs")

    assert {run.period_key for run in runs} == {period.key}
    assert [run.status for run in runs] == ["succeeded", "succeeded"]
    assert ledger_counts() == dict.fromkeys(players, 1)
    totals = money_totals()
    assert totals["ledger"] == PLAYERS * REBATE_MINOR
    assert totals["credited_items"] == totals["ledger"]
    assert totals["balances"] == totals["ledger"]
    assert totals["wallet_events"] == PLAYERS


def make_app_zone() -> Any:
    from app.settings import get_settings

    return get_settings().timezone


def test_task_delivered_twice_changes_nothing(
    fault_db: str, private_redis: PrivateRedis, output_log: OutputLog
) -> None:
    point_settings_at(BROKER_URL=private_redis.url(), SETTLEMENT_BATCH_SIZE=str(BATCH_SIZE))
    players = seed_players()
    app = make_app()
    task_id = str(uuid.uuid4())

    with managed(
        start_worker(output_log, "twice@faults", "settlement", BROKER_URL=private_redis.url())
    ):
        app.send_task(TASK, kwargs={"period": DAY}, queue="settlement", task_id=task_id)
        wait_until(lambda: finished_runs(1), SETTLE_TIMEOUT_SECONDS, "the first delivery")
        after_first = money_totals()

        app.send_task(TASK, kwargs={"period": DAY}, queue="settlement", task_id=task_id)
        runs = wait_until(lambda: finished_runs(2), SETTLE_TIMEOUT_SECONDS, "the second delivery")

    assert after_first["ledger"] == PLAYERS * REBATE_MINOR
    assert money_totals() == after_first
    assert ledger_counts() == dict.fromkeys(players, 1)
    first, second = runs
    assert first.status == "succeeded"
    assert second.status == "succeeded"
    assert first.credited_count == PLAYERS
    with transaction() as session:
        second_items = session.scalars(
            select(SettlementItem).where(SettlementItem.run_id == second.id)
        ).all()
    assert len(second_items) == PLAYERS
    assert {item.amount_minor for item in second_items} == {0}
    assert {item.status for item in second_items} == {"credited"}
    assert {item.reason for item in second_items} == {
        f"credited_earlier: credited by run {first.id}"
    }


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (
            "INSERT INTO bets (player_id, game_category, stake_minor, payout_minor, status,"
            " placed_at, settled_at) VALUES (:player, 'slots', -100, 0, 'settled', :at, :at)",
            "stake_not_negative",
        ),
        (
            "INSERT INTO bets (player_id, game_category, stake_minor, payout_minor, status,"
            " placed_at, settled_at) VALUES (:missing, 'slots', 100, 0, 'settled', :at, :at)",
            "fk_bets_player_id_players",
        ),
        (
            "INSERT INTO players (currency, vip_tier, status) VALUES ('XXX', 0, 'active')",
            "fk_players_currency_currencies",
        ),
        (
            "INSERT INTO promotion_rates (terms_id, vip_tier, game_category, rate)"
            " VALUES (:terms, 1, 'live', -0.01)",
            "ck_promotion_rates_rate",
        ),
        (
            "INSERT INTO promotion_terms (kind, currency, min_basis_minor, min_payout_minor,"
            " cap_minor) VALUES ('cashback', 'PHP', 0, 500, 100)",
            "ck_promotion_terms_cap",
        ),
    ],
    ids=["negative_stake", "bet_without_player", "unknown_currency", "negative_rate", "low_cap"],
)
def test_bad_settlement_input_rejected(statement: str, constraint: str, fault_db: str) -> None:
    players = seed_players(count=1)
    with transaction() as session:
        terms = session.scalar(text("SELECT min(id) FROM promotion_terms"))

    with pytest.raises(IntegrityError) as caught, transaction() as session:
        session.execute(
            text(statement),
            {"player": players[0], "missing": 999_999, "at": IN_DAY, "terms": terms},
        )

    assert constraint in str(caught.value.orig)
    outcome = runner.run_settlement("rebate", DAY)
    assert outcome.status == "succeeded"
    assert ledger_counts() == {players[0]: 1}
    assert money_totals()["ledger"] == REBATE_MINOR
