"""Outbox rows that can never be published: each is parked with its error, the others go on.

The bad rows are written with plain SQL, as a writer that bypasses
``outbox.enqueue`` (or data from before a limit was lowered) would leave them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import insert

from app.db import transaction
from outbox.enqueue import enqueue
from outbox.errors import InvalidOutboxEvent, OutboxPublishFailure
from outbox.poller import outbox_table
from tests.conftest import loop_record, point_settings_at
from tests.faults.conftest import REDIS_PASSWORD
from tests.faults.faults_testing import make_app, outbox_rows, queued_event_ids
from tests.faults.servers import OutputLog, PrivateRedis
from tests.outbox.outbox_testing import ROUTED_EVENT_TYPE, add_events

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

TASK = "tasks.outbox.wallet"
#: Largest bulk string the private Redis accepts (its proto-max-bulk-len, the minimum allowed).
BROKER_MAX_BULK_BYTES = 1024 * 1024
#: A payload over the broker's limit but under the enqueue limit set in the test.
OVERSIZED_PAYLOAD_CHARS = 3 * BROKER_MAX_BULK_BYTES // 2


@pytest.fixture
def small_redis(output_log: OutputLog) -> Iterator[PrivateRedis]:
    """A private Redis that rejects any bulk string over 1 MiB."""
    server = PrivateRedis(
        output_log, REDIS_PASSWORD, ["--proto-max-bulk-len", str(BROKER_MAX_BULK_BYTES)]
    )
    server.start()
    yield server
    server.stop()


def insert_raw_row(
    aggregate_id: str, event_type: str, payload: Any, stream: str = "wallet"
) -> uuid.UUID:
    """Write one outbox row directly, without enqueue's checks."""
    event_id = uuid.uuid4()
    with transaction() as session:
        session.execute(
            insert(outbox_table(stream)),
            {
                "event_id": event_id,
                "aggregate_type": "wallet",
                "aggregate_id": aggregate_id,
                "event_type": event_type,
                "payload": payload,
                "headers": {},
            },
        )
    return event_id


def run_with_bad_row(
    small_redis: PrivateRedis, aggregate_id: str, event_type: str, payload: Any
) -> tuple[Any, uuid.UUID, list[uuid.UUID]]:
    """Publish good rows around one raw bad row; return the result, bad id and good ids."""
    point_settings_at(BROKER_URL=small_redis.url(), OUTBOX_DESTINATIONS="")
    app = make_app()
    good_before = add_events("wallet", [("good-1", ROUTED_EVENT_TYPE)])
    bad = insert_raw_row(aggregate_id, event_type, payload)
    good_after = add_events(
        "wallet", [("good-2", ROUTED_EVENT_TYPE), ("good-3", ROUTED_EVENT_TYPE)]
    )
    return app.tasks[TASK].apply(), bad, [*good_before, *good_after]


def assert_parked_others_published(
    result: Any, bad: uuid.UUID, good: list[uuid.UUID], small_redis: PrivateRedis, error: str
) -> None:
    assert result.state == "FAILURE"
    assert isinstance(result.result, OutboxPublishFailure)
    assert result.result.summary["counts"]["published"] == len(good)
    assert result.result.summary["counts"]["parked"] == 1
    rows = {row.event_id: row for row in outbox_rows()}
    for event_id in good:
        assert rows[event_id].published_at is not None
    assert rows[bad].published_at is None
    assert rows[bad].parked_at is not None
    assert error in rows[bad].last_error
    with small_redis.client() as client:
        assert sorted(queued_event_ids(client)) == sorted(good)
    record = loop_record("outbox.wallet")
    assert record is not None
    assert record.consecutive_failures == 1


def test_row_over_broker_limit_parked(fault_db: str, small_redis: PrivateRedis) -> None:
    payload = {"blob": "x" * OVERSIZED_PAYLOAD_CHARS}

    result, bad, good = run_with_bad_row(small_redis, "big", ROUTED_EVENT_TYPE, payload)

    assert_parked_others_published(result, bad, good, small_redis, "bytes")


def test_row_without_event_type_parked(fault_db: str, small_redis: PrivateRedis) -> None:
    result, bad, good = run_with_bad_row(small_redis, "untyped", "", {"amount_minor": 1})

    assert_parked_others_published(result, bad, good, small_redis, "event type")


@pytest.mark.parametrize(
    ("stream", "event_type", "payload", "field"),
    [
        ("wallet", ROUTED_EVENT_TYPE, {"ids": {1, 2}}, "payload"),
        ("wallet", ROUTED_EVENT_TYPE, {"amount": float("nan")}, "payload"),
        ("wallet", ROUTED_EVENT_TYPE, {"blob": "x" * OVERSIZED_PAYLOAD_CHARS}, "payload"),
        ("wallet", "", {"amount_minor": 1}, "event_type"),
        ("payments", ROUTED_EVENT_TYPE, {"amount_minor": 1}, "stream"),
    ],
    ids=["set_payload", "nan_payload", "oversized_payload", "no_event_type", "unknown_stream"],
)
def test_enqueue_rejects_bad_event_others_published(
    stream: str,
    event_type: str,
    payload: Any,
    field: str,
    fault_db: str,
    small_redis: PrivateRedis,
) -> None:
    point_settings_at(BROKER_URL=small_redis.url(), OUTBOX_DESTINATIONS="")
    app = make_app()
    good = add_events("wallet", [("good-1", ROUTED_EVENT_TYPE)])

    with pytest.raises(InvalidOutboxEvent) as caught, transaction() as session:
        enqueue(
            session,
            stream,
            aggregate_type="wallet",
            aggregate_id="bad",
            event_type=event_type,
            payload=payload,
        )
        enqueue(
            session,
            "wallet",
            aggregate_type="wallet",
            aggregate_id="same-transaction",
            event_type=ROUTED_EVENT_TYPE,
            payload={"amount_minor": 2},
        )

    assert caught.value.field == field
    result = app.tasks[TASK].apply()
    assert result.state == "SUCCESS"
    assert result.result["counts"]["published"] == 1
    assert [row.event_id for row in outbox_rows()] == good
    with small_redis.client() as client:
        assert queued_event_ids(client) == good
