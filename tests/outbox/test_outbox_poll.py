"""The outbox poller task against real PostgreSQL, Redis and RabbitMQ."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from celery import Celery
from sqlalchemy import update

from app.db import get_engine, transaction
from app.embedded_broker import transport_options as embedded_transport_options
from outbox.errors import OutboxPublishFailure
from outbox.poller import backoff_seconds, drain_stream, outbox_table, stream_lock
from tests.conftest import loop_record, point_settings_at
from tests.outbox.outbox_testing import (
    ROUTED_EVENT_TYPE,
    UNROUTED_EVENT_TYPE,
    add_events,
    delete_amqp_entities,
    make_celery_app,
    read_queue,
    route_only,
    rows_by_event_id,
)

LOOP = "outbox.wallet"
TASK = "tasks.outbox.wallet"


def run_poller(app: Celery) -> object:
    return app.tasks[TASK].apply()


def counts_of(result: object) -> dict[str, int]:
    value = result.result  # type: ignore[attr-defined]
    summary = value.summary if isinstance(value, OutboxPublishFailure) else value
    return dict(summary["counts"])


@pytest.fixture
def redis_queue(pg_database_url: str, redis_url: str) -> Iterator[str]:
    """A fresh Redis database as broker, and one wallet queue bound to ROUTED_EVENT_TYPE."""
    redis.Redis.from_url(redis_url).flushdb()
    queue_name = f"test.wallet.{uuid.uuid4().hex[:8]}"
    route_only(queue_name, BROKER_URL=redis_url)
    yield queue_name
    point_settings_at(BROKER_URL="filesystem://", OUTBOX_DESTINATIONS=None)


@pytest.fixture
def rabbitmq_queue(pg_database_url: str, rabbitmq_url: str) -> Iterator[str]:
    """RabbitMQ as broker, with one wallet queue bound to ROUTED_EVENT_TYPE."""
    queue_name = f"test.wallet.{uuid.uuid4().hex[:8]}"
    delete_amqp_entities(rabbitmq_url, "outbox.wallet", [])
    route_only(queue_name, BROKER_URL=rabbitmq_url)
    yield queue_name
    delete_amqp_entities(rabbitmq_url, "outbox.wallet", [queue_name])
    point_settings_at(BROKER_URL="filesystem://", OUTBOX_DESTINATIONS=None)


@pytest.fixture
def app() -> Celery:
    return make_celery_app()


@pytest.mark.postgres
@pytest.mark.redis
def test_poll_all_rows_fail_raises(redis_queue: str, app: Celery) -> None:
    assert run_poller(app).state == "SUCCESS"
    success_before = loop_record(LOOP).last_success_at
    ids = add_events("wallet", [("w1", UNROUTED_EVENT_TYPE), ("w2", UNROUTED_EVENT_TYPE)])

    result = run_poller(app)

    assert result.state == "FAILURE"
    assert isinstance(result.result, OutboxPublishFailure)
    assert counts_of(result)["failed"] == 2
    assert counts_of(result)["published"] == 0
    assert [error["id"] for error in result.result.summary["errors"]] == [str(i) for i in ids]
    rows = rows_by_event_id("wallet")
    for event_id in ids:
        assert rows[event_id].published_at is None
        assert rows[event_id].attempts == 1
        assert "unroutable" in rows[event_id].last_error
        assert rows[event_id].next_attempt_at is not None
        assert rows[event_id].parked_at is None
    record = loop_record(LOOP)
    assert record.last_success_at == success_before
    assert record.consecutive_failures == 1
    assert record.last_error_class == "OutboxPublishFailure"
    assert read_queue(get_settings_broker(), redis_queue) == []


def get_settings_broker() -> str:
    from app.settings import get_settings

    return get_settings().broker_url


@pytest.mark.postgres
@pytest.mark.redis
def test_poll_some_rows_fail_raises_with_counts(redis_queue: str, app: Celery) -> None:
    ok_first, failing, ok_last = add_events(
        "wallet",
        [("w1", ROUTED_EVENT_TYPE), ("w2", UNROUTED_EVENT_TYPE), ("w3", ROUTED_EVENT_TYPE)],
    )
    before = rows_by_event_id("wallet")

    result = run_poller(app)

    assert result.state == "FAILURE"
    assert counts_of(result) == {
        "published": 2,
        "failed": 1,
        "deferred": 0,
        "parked": 0,
        "broker_unavailable": 0,
    }
    after = rows_by_event_id("wallet")
    for event_id in (ok_first, ok_last):
        assert after[event_id].published_at is not None
        assert after[event_id].attempts == 0
        assert after[event_id].last_error is None
    changed = {"attempts", "last_error", "next_attempt_at"}
    for column in after[failing]._fields:
        if column not in changed:
            assert getattr(after[failing], column) == getattr(before[failing], column), column
    assert after[failing].attempts == 1
    assert after[failing].next_attempt_at > after[ok_first].published_at
    assert loop_record(LOOP).last_success_at is None

    messages = read_queue(get_settings_broker(), redis_queue)
    assert [m.properties["message_id"] for m in messages] == [str(ok_first), str(ok_last)]


@pytest.mark.postgres
@pytest.mark.redis
def test_poll_all_rows_published_once(redis_queue: str, app: Celery) -> None:
    ids = add_events("wallet", [(f"w{index % 3}", ROUTED_EVENT_TYPE) for index in range(6)])

    result = run_poller(app)

    assert result.state == "SUCCESS"
    assert counts_of(result)["published"] == 6
    assert counts_of(result)["failed"] == 0
    rows = rows_by_event_id("wallet")
    assert all(rows[event_id].published_at is not None for event_id in ids)
    record = loop_record(LOOP)
    assert record.last_success_at is not None
    assert record.last_success_summary["counts"]["published"] == 6

    messages = read_queue(get_settings_broker(), redis_queue)
    assert [m.properties["message_id"] for m in messages] == [str(event_id) for event_id in ids]
    first = messages[0]
    assert first.delivery_info["routing_key"] == ROUTED_EVENT_TYPE
    assert first.delivery_info["exchange"] == "outbox.wallet"
    assert first.properties["delivery_mode"] == 2
    assert first.content_type == "application/json"
    assert first.payload == {"sequence": 0, "amount_minor": 100}
    assert first.headers["event_id"] == str(ids[0])
    assert first.headers["aggregate_id"] == "w0"
    assert first.headers["aggregate_type"] == "wallet"
    assert first.headers["event_type"] == ROUTED_EVENT_TYPE
    assert first.headers["created_at"] == rows[ids[0]].created_at.isoformat()
    assert first.headers["trace_id"] == "trace-0"

    assert run_poller(app).state == "SUCCESS"
    assert read_queue(get_settings_broker(), redis_queue) == []


def test_poll_empty_outbox_succeeds(database_url: str, app: Celery) -> None:
    result = run_poller(app)

    assert result.state == "SUCCESS"
    assert counts_of(result) == {
        "published": 0,
        "failed": 0,
        "deferred": 0,
        "parked": 0,
        "broker_unavailable": 0,
    }
    record = loop_record(LOOP)
    assert record.last_success_at is not None
    assert record.consecutive_failures == 0


@pytest.mark.postgres
@pytest.mark.redis
def test_poll_defers_aggregate_after_failure(redis_queue: str, app: Celery) -> None:
    a1, b1, a2, b2, a3 = add_events(
        "wallet",
        [
            ("a", ROUTED_EVENT_TYPE),
            ("b", ROUTED_EVENT_TYPE),
            ("a", UNROUTED_EVENT_TYPE),
            ("b", ROUTED_EVENT_TYPE),
            ("a", ROUTED_EVENT_TYPE),
        ],
    )

    result = run_poller(app)

    assert result.state == "FAILURE"
    assert counts_of(result)["published"] == 3
    assert counts_of(result)["failed"] == 1
    assert counts_of(result)["deferred"] == 1
    rows = rows_by_event_id("wallet")
    assert rows[a2].attempts == 1
    assert rows[a3].published_at is None
    assert rows[a3].attempts == 0
    assert rows[a3].last_error is None
    messages = read_queue(get_settings_broker(), redis_queue)
    assert [m.properties["message_id"] for m in messages] == [str(a1), str(b1), str(b2)]

    second = run_poller(app)

    assert second.state == "SUCCESS"
    assert counts_of(second)["published"] == 0
    assert rows_by_event_id("wallet")[a3].published_at is None


@pytest.mark.postgres
@pytest.mark.redis
def test_poll_parks_after_max_attempts(redis_queue: str, app: Celery) -> None:
    point_settings_at(OUTBOX_MAX_ATTEMPTS="2")
    try:
        poison, later = add_events("wallet", [("a", UNROUTED_EVENT_TYPE), ("a", ROUTED_EVENT_TYPE)])
        other = add_events("wallet", [("b", ROUTED_EVENT_TYPE)])[0]

        first = run_poller(app)
        make_due(poison)
        second = run_poller(app)
        make_due(poison)
        third = run_poller(app)
    finally:
        point_settings_at(OUTBOX_MAX_ATTEMPTS=None)

    assert counts_of(first)["failed"] == 1
    assert counts_of(first)["deferred"] == 1
    assert second.state == "FAILURE"
    assert counts_of(second)["parked"] == 1
    assert counts_of(second)["failed"] == 0
    assert third.state == "SUCCESS"
    assert counts_of(third)["published"] == 0
    rows = rows_by_event_id("wallet")
    assert rows[poison].parked_at is not None
    assert rows[poison].attempts == 2
    assert rows[later].published_at is None
    assert rows[later].attempts == 0
    assert rows[other].published_at is not None


def make_due(event_id: uuid.UUID) -> None:
    """Move a failed row's next attempt into the past, as if its backoff had passed."""
    table = outbox_table("wallet")
    with transaction() as session:
        row = rows_by_event_id("wallet")[event_id]
        session.execute(
            update(table)
            .where(table.c.event_id == event_id)
            .values(next_attempt_at=row.next_attempt_at - timedelta(hours=1))
        )


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_poll_broker_unreachable_fails_fast(
    pg_database_url: str, closed_port: int, app: Celery, scheme: str
) -> None:
    url = f"redis://127.0.0.1:{closed_port}/0"
    if scheme == "amqp":
        url = f"amqp://guest:guest@127.0.0.1:{closed_port}//"
    point_settings_at(BROKER_URL=url, BROKER_TIMEOUT_SECONDS="2")
    try:
        ids = add_events("wallet", [("w1", ROUTED_EVENT_TYPE), ("w2", ROUTED_EVENT_TYPE)])
        started = time.monotonic()
        result = run_poller(app)
        elapsed_seconds = time.monotonic() - started
    finally:
        point_settings_at(BROKER_URL="filesystem://", BROKER_TIMEOUT_SECONDS=None)

    assert result.state == "FAILURE"
    assert counts_of(result)["broker_unavailable"] == 1
    assert "connecting to the broker failed" in result.result.summary["errors"][0]["error"]
    # Bound: one connect attempt of at most BROKER_TIMEOUT_SECONDS, without retries.
    assert elapsed_seconds < 10
    rows = rows_by_event_id("wallet")
    for event_id in ids:
        assert rows[event_id].published_at is None
        assert rows[event_id].attempts == 0
    assert loop_record(LOOP).last_success_at is None


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_poll_rabbitmq_unroutable_counts_failed(
    rabbitmq_queue: str, rabbitmq_url: str, app: Celery
) -> None:
    routed, unroutable = add_events(
        "wallet", [("w1", ROUTED_EVENT_TYPE), ("w2", UNROUTED_EVENT_TYPE)]
    )

    result = run_poller(app)

    assert result.state == "FAILURE"
    assert counts_of(result)["published"] == 1
    assert counts_of(result)["failed"] == 1
    rows = rows_by_event_id("wallet")
    assert rows[routed].published_at is not None
    assert rows[unroutable].published_at is None
    assert rows[unroutable].attempts == 1
    assert "returned by the broker" in rows[unroutable].last_error
    assert "NO_ROUTE" in rows[unroutable].last_error
    messages = read_queue(rabbitmq_url, rabbitmq_queue)
    assert [m.properties["message_id"] for m in messages] == [str(routed)]
    assert messages[0].payload == {"sequence": 0, "amount_minor": 100}
    assert messages[0].headers["aggregate_id"] == "w1"
    assert messages[0].delivery_info["routing_key"] == ROUTED_EVENT_TYPE


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_poll_rabbitmq_all_confirmed(rabbitmq_queue: str, rabbitmq_url: str, app: Celery) -> None:
    ids = add_events("wallet", [(f"w{index}", ROUTED_EVENT_TYPE) for index in range(5)])

    result = run_poller(app)

    assert result.state == "SUCCESS"
    assert counts_of(result)["published"] == 5
    messages = read_queue(rabbitmq_url, rabbitmq_queue)
    assert [m.properties["message_id"] for m in messages] == [str(event_id) for event_id in ids]
    assert all(m.properties["delivery_mode"] == 2 for m in messages)


@pytest.mark.postgres
@pytest.mark.redis
def test_poll_drains_several_batches(redis_queue: str, app: Celery) -> None:
    point_settings_at(OUTBOX_BATCH_SIZE="2")
    try:
        add_events("wallet", [(f"w{index}", ROUTED_EVENT_TYPE) for index in range(7)])
        result = run_poller(app)
    finally:
        point_settings_at(OUTBOX_BATCH_SIZE=None)

    assert result.state == "SUCCESS"
    assert counts_of(result)["published"] == 7
    assert result.result["batches"] == 4
    assert len(read_queue(get_settings_broker(), redis_queue)) == 7


@pytest.mark.postgres
@pytest.mark.redis
def test_poll_second_poller_skips_locked_stream(redis_queue: str, app: Celery) -> None:
    event_id = add_events("wallet", [("w1", ROUTED_EVENT_TYPE)])[0]

    with stream_lock(get_engine(), "wallet") as acquired:
        assert acquired
        outcome = drain_stream("wallet")
        result = run_poller(app)

    assert outcome.ok
    assert outcome.details["skipped"] == "another poller holds the stream lock"
    assert outcome.counts["published"] == 0
    assert result.state == "SUCCESS"
    assert rows_by_event_id("wallet")[event_id].published_at is None

    after_release = run_poller(app)

    assert counts_of(after_release)["published"] == 1


def test_poll_embedded_broker_publishes(database_url: str, app: Celery) -> None:
    from app.settings import get_settings

    queue_name = f"test.wallet.{uuid.uuid4().hex[:8]}"
    route_only(queue_name)
    try:
        ids = add_events("wallet", [("w1", ROUTED_EVENT_TYPE), ("w2", ROUTED_EVENT_TYPE)])
        result = run_poller(app)
        options = embedded_transport_options(get_settings())
        messages = read_queue("filesystem://", queue_name, **options)
    finally:
        point_settings_at(OUTBOX_DESTINATIONS=None)

    assert result.state == "SUCCESS"
    assert counts_of(result)["published"] == 2
    rows = rows_by_event_id("wallet")
    assert all(rows[event_id].published_at is not None for event_id in ids)
    # The filesystem transport orders messages written in the same millisecond by a random id.
    assert sorted(m.properties["message_id"] for m in messages) == sorted(str(i) for i in ids)
    assert sorted(m.payload["sequence"] for m in messages) == [0, 1]


def test_backoff_grows_and_is_capped() -> None:
    assert 1.0 <= backoff_seconds(1) <= 2.0
    assert 4.0 <= backoff_seconds(3) <= 5.0
    assert backoff_seconds(30) == 300.0


@pytest.mark.postgres
@pytest.mark.redis
def test_poll_failed_batch_leaves_next_batch_unclaimed(redis_queue: str, app: Celery) -> None:
    point_settings_at(OUTBOX_BATCH_SIZE="2")
    try:
        a1, u1, b1, b2 = add_events(
            "wallet",
            [
                ("a", ROUTED_EVENT_TYPE),
                ("u", UNROUTED_EVENT_TYPE),
                ("b", ROUTED_EVENT_TYPE),
                ("c", ROUTED_EVENT_TYPE),
            ],
        )
        result = run_poller(app)
    finally:
        point_settings_at(OUTBOX_BATCH_SIZE=None)

    assert result.state == "FAILURE"
    assert counts_of(result)["published"] == 1
    rows = rows_by_event_id("wallet")
    assert rows[a1].published_at is not None
    assert rows[u1].published_at is None
    assert rows[u1].attempts == 1
    for later in (b1, b2):
        assert rows[later].published_at is None
        assert rows[later].attempts == 0
    messages = read_queue(get_settings_broker(), redis_queue)
    assert [m.properties["message_id"] for m in messages] == [str(a1)]
