"""Enqueue rejects every bad input before anything is written."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from app.db import transaction
from outbox.enqueue import OutboxEvent, enqueue, enqueue_many
from outbox.errors import InvalidOutboxEvent
from tests.conftest import point_settings_at
from tests.outbox.outbox_testing import rows_by_event_id

VALID = {
    "aggregate_type": "wallet",
    "aggregate_id": "w1",
    "event_type": "wallet.credited",
    "payload": {"amount_minor": 100},
}

BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown stream", {"stream": "ledger"}, "stream"),
    ("empty event type", {"event_type": ""}, "event_type"),
    ("blank event type", {"event_type": "   "}, "event_type"),
    ("empty aggregate id", {"aggregate_id": ""}, "aggregate_id"),
    ("empty aggregate type", {"aggregate_type": ""}, "aggregate_type"),
    ("event type too long", {"event_type": "x" * 129}, "event_type"),
    ("payload not JSON", {"payload": {"at": object()}}, "payload"),
    ("payload NaN", {"payload": {"amount": math.nan}}, "payload"),
    ("payload too large", {"payload": {"blob": "x" * 300}}, "payload"),
    ("headers not JSON", {"headers": {"trace": {1, 2}}}, "headers"),
]


@pytest.fixture
def small_payload_limit(database_url: str) -> Any:
    point_settings_at(OUTBOX_MAX_PAYLOAD_BYTES="256")
    yield
    point_settings_at(OUTBOX_MAX_PAYLOAD_BYTES=None)


@pytest.mark.parametrize(("case", "change", "field"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_enqueue_bad_input_writes_nothing(
    small_payload_limit: None, case: str, change: dict[str, Any], field: str
) -> None:
    values = {**VALID, **change}
    stream = values.pop("stream", "wallet")

    # The transaction commits, so a row written by the bad call would be visible.
    with transaction() as session, pytest.raises(InvalidOutboxEvent) as raised:
        valid_id = enqueue(session, "wallet", **VALID)
        enqueue(session, stream, **values)

    assert raised.value.field == field
    assert field in str(raised.value)
    assert list(rows_by_event_id("wallet")) == [valid_id]


def test_enqueue_many_rejects_whole_batch(small_payload_limit: None) -> None:
    good = OutboxEvent(**VALID)
    bad = OutboxEvent(**{**VALID, "aggregate_id": ""})

    with transaction() as session, pytest.raises(InvalidOutboxEvent) as raised:
        enqueue_many(session, "wallet", [good, bad])

    assert raised.value.field == "aggregate_id"
    assert rows_by_event_id("wallet") == {}


def test_enqueue_writes_row_with_given_id(small_payload_limit: None) -> None:
    event_id = uuid.uuid4()

    with transaction() as session:
        returned = enqueue(
            session, "wallet", **VALID, headers={"trace_id": "t1"}, event_id=event_id
        )

    assert returned == event_id
    row = rows_by_event_id("wallet")[event_id]
    assert row.payload == {"amount_minor": 100}
    assert row.headers == {"trace_id": "t1"}
    assert row.attempts == 0
    assert row.published_at is None
