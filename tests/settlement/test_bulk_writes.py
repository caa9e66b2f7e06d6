"""Set-based settlement writes: chunked item inserts, batches read back, bulk credit events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import get_engine, transaction
from outbox.enqueue import enqueue_encoded
from outbox.errors import InvalidOutboxEvent
from outbox.models import WalletOutbox
from settlement.ledger import Credit, credit_payload_json
from settlement.models import SettlementItem
from settlement.periods import Period, resolve_period
from settlement.records import PlannedItem, create_run, insert_items_overlapped
from settlement.runner import run_settlement
from tests.conftest import point_settings_at
from tests.settlement.conftest import RejectingGateway
from tests.settlement.seed import (
    DAY,
    IN_DAY,
    add_bet,
    add_player,
    add_terms,
    items,
    ledger_count_by_player,
    outbox_rows,
)


def _credit(key: str, currency: str = "PHP") -> Credit:
    return Credit(
        item_id=7,
        run_id=3,
        kind="rebate",
        period_key=DAY,
        player_id=42,
        currency=currency,
        amount_minor=1234,
        idempotency_key=key,
    )


@pytest.mark.parametrize("key", ["rebate:2026-12-03:42", 'odd "key" \\ with ünïcode\n'])
def test_payload_json_matches_dumps(key: str) -> None:
    credit = _credit(key)

    text = credit_payload_json(credit, wallet_id=9, entry_id=11, balance_minor=-5)

    expected = {
        "wallet_id": 9,
        "player_id": 42,
        "ledger_entry_id": 11,
        "amount_minor": 1234,
        "currency": "PHP",
        "balance_minor": -5,
        "entry_type": "rebate",
        "idempotency_key": key,
        "settlement": {"kind": "rebate", "period_key": DAY, "run_id": 3},
    }
    assert text == json.dumps(expected, separators=(",", ":"))


def _encoded(payload: str) -> dict[str, list[str] | list[uuid.UUID]]:
    return {
        "event_ids": [uuid.UUID(int=1), uuid.UUID(int=2)],
        "aggregate_ids": ["w1", "w2"],
        "payloads_json": ['{"amount_minor":1}', payload],
        "headers_json": ['{"idempotency_key":"a"}', '{"idempotency_key":"b"}'],
    }


def test_enqueue_encoded_writes_rows(database_url: str) -> None:
    with transaction() as session:
        enqueue_encoded(
            session,
            "wallet",
            aggregate_type="wallet",
            event_type="wallet.credited",
            **_encoded('{"amount_minor":2,"note":"x\\"y"}'),  # type: ignore[arg-type]
        )

    with transaction() as session:
        rows = session.scalars(select(WalletOutbox).order_by(WalletOutbox.id)).all()
    assert [(row.event_id, row.aggregate_id, row.event_type) for row in rows] == [
        (uuid.UUID(int=1), "w1", "wallet.credited"),
        (uuid.UUID(int=2), "w2", "wallet.credited"),
    ]
    assert [row.payload for row in rows] == [
        {"amount_minor": 1},
        {"amount_minor": 2, "note": 'x"y'},
    ]
    assert [row.headers for row in rows] == [{"idempotency_key": "a"}, {"idempotency_key": "b"}]


@pytest.fixture
def small_payload_limit(database_url: str) -> Iterator[None]:
    point_settings_at(OUTBOX_MAX_PAYLOAD_BYTES="256")
    yield
    point_settings_at(OUTBOX_MAX_PAYLOAD_BYTES=None)


def test_encoded_large_payload_rejected(small_payload_limit: None) -> None:
    too_large = json.dumps({"blob": "x" * 300}, separators=(",", ":"))

    with pytest.raises(InvalidOutboxEvent) as raised, transaction() as session:
        enqueue_encoded(
            session,
            "wallet",
            aggregate_type="wallet",
            event_type="wallet.credited",
            **_encoded(too_large),  # type: ignore[arg-type]
        )

    assert raised.value.field == "payload"
    assert "is 311 bytes as JSON, the maximum is 256" in str(raised.value)
    assert outbox_rows() == []


def test_encoded_unknown_stream_rejected(database_url: str) -> None:
    with pytest.raises(InvalidOutboxEvent) as raised, transaction() as session:
        enqueue_encoded(
            session,
            "ledger",
            aggregate_type="wallet",
            event_type="wallet.credited",
            **_encoded("{}"),  # type: ignore[arg-type]
        )

    assert raised.value.field == "stream"


def test_run_credits_in_batches_by_item_id(world: str) -> None:
    point_settings_at(SETTLEMENT_BATCH_SIZE="2")
    with transaction() as session:
        add_terms(session, "rebate")
        players = [add_player(session) for _ in range(7)]
        for player in players:
            add_bet(session, player, 10000)
    gateway = RejectingGateway(reject=set())

    outcome = run_settlement("rebate", DAY, gateway=gateway)

    assert outcome.status == "succeeded"
    assert gateway.batches == [players[0:2], players[2:4], players[4:6], players[6:7]]
    assert ledger_count_by_player() == dict.fromkeys(players, 1)
    assert {item.status for item in items(outcome.details["run_id"]).values()} == {"credited"}
    assert len(outbox_rows()) == 7


def _day() -> Period:
    return resolve_period(
        "rebate", DAY, now=IN_DAY.replace(day=5), zone=ZoneInfo("UTC"), lossback_period="weekly"
    )


def _planned(player_ids: list[int]) -> Iterator[PlannedItem]:
    for player_id in player_ids:
        yield PlannedItem(
            player_id=player_id,
            currency="PHP",
            basis_minor=100,
            amount_minor=1,
            status="pending",
            idempotency_key=f"rebate:{DAY}:{player_id}",
            details={"turnover_minor": {"slots": 100}},
        )


def test_overlapped_insert_writes_every_chunk(pg_world: str) -> None:
    with transaction() as session:
        players = [add_player(session) for _ in range(5)]
    run_id = create_run(get_engine(), "rebate", _day(), None, None)

    with transaction() as session:
        inserted = insert_items_overlapped(
            session, run_id, "rebate", DAY, _planned(players), chunk_rows=2
        )

    assert inserted == 5
    run_items = items(run_id)
    assert sorted(run_items) == players
    assert run_items[players[4]].details == {"turnover_minor": {"slots": 100}}
    assert run_items[players[4]].idempotency_key == f"rebate:{DAY}:{players[4]}"


def test_overlapped_insert_failing_chunk_raises(pg_world: str) -> None:
    with transaction() as session:
        players = [add_player(session) for _ in range(3)]
    run_id = create_run(get_engine(), "rebate", _day(), None, None)

    # Player 999 does not exist, so the second chunk violates the foreign key.
    with pytest.raises(IntegrityError), transaction() as session:
        insert_items_overlapped(
            session, run_id, "rebate", DAY, _planned([*players[:2], 999, players[2]]), chunk_rows=2
        )

    with transaction() as session:
        assert session.scalars(select(SettlementItem)).all() == []


def test_overlapped_insert_planning_error_raises(pg_world: str) -> None:
    with transaction() as session:
        players = [add_player(session) for _ in range(3)]
    run_id = create_run(get_engine(), "rebate", _day(), None, None)

    def failing_plan() -> Iterator[PlannedItem]:
        yield from _planned(players)
        raise RuntimeError("calculator broke")

    with pytest.raises(RuntimeError, match="calculator broke"), transaction() as session:
        insert_items_overlapped(session, run_id, "rebate", DAY, failing_plan(), chunk_rows=2)

    with transaction() as session:
        assert session.scalars(select(SettlementItem)).all() == []
