"""The broker stops, comes back, or drops its clients while the outbox is being published."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from outbox.errors import OutboxPublishFailure
from outbox.publisher import OutboxMessage, PublishResult, RedisPublisher
from tests.conftest import loop_record, point_settings_at
from tests.faults.faults_testing import (
    duplicates,
    health_check,
    make_app,
    outbox_rows,
    queued_event_ids,
    start_worker,
    unpublished_count,
)
from tests.faults.servers import (
    OutputLog,
    PrivateRedis,
    managed,
    wait_until,
)
from tests.outbox.outbox_testing import ROUTED_EVENT_TYPE, add_events

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

LOOP = "outbox.wallet"
TASK = "tasks.outbox.wallet"
BATCH_SIZE = 10
#: Freshness budget of the outbox loops in these tests, in seconds.
MAX_AGE_SECONDS = 6
#: Seconds a test waits for readiness to change or a backlog to drain.
SETTLE_TIMEOUT_SECONDS = 45


def test_broker_stop_mid_drain_then_recovers(
    fault_db: str, private_redis: PrivateRedis, output_log: OutputLog, monkeypatch: Any
) -> None:
    point_settings_at(
        BROKER_URL=private_redis.url(),
        OUTBOX_BATCH_SIZE=str(BATCH_SIZE),
        OUTBOX_MAX_AGE_SECONDS=str(MAX_AGE_SECONDS),
        OUTBOX_DESTINATIONS="",
    )
    app = make_app()
    warmup_ids = add_events("wallet", [("warmup", ROUTED_EVENT_TYPE)])
    assert app.tasks[TASK].apply().state == "SUCCESS"
    status, _ = health_check(output_log, LOOP)
    assert status == 0

    ids = add_events("wallet", [(f"player-{index}", ROUTED_EVENT_TYPE) for index in range(50)])
    seen_before_cut: list[Any] = []
    calls = {"batches": 0}
    publish_batch = RedisPublisher.publish_batch

    def stop_broker_before_third_batch(
        self: RedisPublisher, messages: Sequence[OutboxMessage], deadline: float | None = None
    ) -> list[PublishResult]:
        calls["batches"] += 1
        if calls["batches"] == 3:
            with private_redis.client() as client:
                seen_before_cut.extend(queued_event_ids(client))
            private_redis.stop()
        return publish_batch(self, messages, deadline)

    monkeypatch.setattr(RedisPublisher, "publish_batch", stop_broker_before_third_batch)

    result = app.tasks[TASK].apply()

    assert result.state == "FAILURE"
    assert isinstance(result.result, OutboxPublishFailure)
    counts = result.result.summary["counts"]
    assert counts["published"] == 2 * BATCH_SIZE
    assert counts["failed"] == BATCH_SIZE
    rows = {row.event_id: row for row in outbox_rows()}
    published_ids = ids[: 2 * BATCH_SIZE]
    failed_ids = ids[2 * BATCH_SIZE : 3 * BATCH_SIZE]
    untouched_ids = ids[3 * BATCH_SIZE :]
    for event_id in published_ids:
        assert rows[event_id].published_at is not None
    for event_id in failed_ids:
        assert rows[event_id].published_at is None
        assert rows[event_id].attempts == 1
        assert "Connection" in rows[event_id].last_error
    for event_id in untouched_ids:
        assert rows[event_id].published_at is None
        assert rows[event_id].attempts == 0
    assert sorted(seen_before_cut) == sorted([*warmup_ids, *published_ids])
    record = loop_record(LOOP)
    assert record is not None
    assert record.consecutive_failures == 1
    assert record.last_error_class == "OutboxPublishFailure"
    output_log.add_text("broker-stop-error", f"{result.result}\n{record.last_error_message}")

    def readiness_red() -> dict[str, Any] | None:
        status, document = health_check(output_log, LOOP)
        return document if status == 1 else None

    document = wait_until(readiness_red, SETTLE_TIMEOUT_SECONDS, "outbox.wallet to go red")
    assert document["ready"] is False
    assert document["loops"][0]["status"] in ("stale", "lagging")

    monkeypatch.setattr(RedisPublisher, "publish_batch", publish_batch)
    private_redis.start()

    def backlog_drained() -> bool:
        app.tasks[TASK].apply()
        return unpublished_count() == 0

    wait_until(backlog_drained, SETTLE_TIMEOUT_SECONDS, "the backlog to drain", interval=0.5)
    assert app.tasks[TASK].apply().state == "SUCCESS"
    status, document = health_check(output_log, LOOP)
    assert status == 0
    assert document["loops"][0]["status"] == "fresh"

    with private_redis.client() as client:
        seen_after_restart = queued_event_ids(client)
    every_delivery = seen_before_cut + seen_after_restart
    assert set(every_delivery) == {*warmup_ids, *ids}
    # Batch three failed before anything was pushed, so no event went out twice.
    assert duplicates(every_delivery) == {}


def test_idle_worker_consumes_after_connection_reset(
    fault_db: str, private_redis: PrivateRedis, output_log: OutputLog
) -> None:
    point_settings_at(BROKER_URL=private_redis.url(), OUTBOX_DESTINATIONS="")
    worker = start_worker(output_log, "idle-reset@faults")
    with managed(worker):
        app = make_app()
        first = add_events("wallet", [("before-reset", ROUTED_EVENT_TYPE)])
        app.tasks[TASK].apply_async(queue="outbox")
        wait_until(lambda: unpublished_count() == 0, SETTLE_TIMEOUT_SECONDS, "the first task")

        closed = private_redis.kill_clients()
        assert closed >= 1

        second = add_events("wallet", [("after-reset", ROUTED_EVENT_TYPE)])
        app.tasks[TASK].apply_async(queue="outbox")
        wait_until(
            lambda: unpublished_count() == 0, SETTLE_TIMEOUT_SECONDS, "a task after the reset"
        )
        assert worker.alive()

    with private_redis.client() as client:
        delivered = queued_event_ids(client)
    assert sorted(delivered) == sorted([*first, *second])
    record = loop_record(LOOP)
    assert record is not None
    assert record.consecutive_failures == 0
    output = worker.output()
    assert "Connection to broker lost" in output
    assert output.count("Connected to redis://") == 2
    assert "Traceback" not in output


def test_worker_sigkill_mid_batch_loses_nothing(
    fault_db: str, private_redis: PrivateRedis, output_log: OutputLog, tmp_path: Path
) -> None:
    point_settings_at(
        BROKER_URL=private_redis.url(), OUTBOX_BATCH_SIZE=str(BATCH_SIZE), OUTBOX_DESTINATIONS=""
    )
    app = make_app()
    ids = add_events("wallet", [(f"player-{index}", ROUTED_EVENT_TYPE) for index in range(25)])
    hold_file = tmp_path / "published-not-marked"

    stalled_worker = start_worker(
        output_log, "stalled@faults", FAULTS_HOLD_AFTER_PUBLISH_FILE=str(hold_file)
    )
    with managed(stalled_worker):
        app.tasks[TASK].apply_async(queue="outbox")
        wait_until(hold_file.exists, SETTLE_TIMEOUT_SECONDS, "the first batch to be published")
        stalled_worker.kill()

    sent_not_marked = [uuid.UUID(text) for text in hold_file.read_text().split()]
    assert sent_not_marked == ids[:BATCH_SIZE]
    with private_redis.client() as client:
        assert queued_event_ids(client) == list(reversed(sent_not_marked))
    assert unpublished_count() == len(ids)

    with managed(start_worker(output_log, "restarted@faults")):
        app.tasks[TASK].apply_async(queue="outbox")
        wait_until(lambda: unpublished_count() == 0, SETTLE_TIMEOUT_SECONDS, "the restarted drain")

    with private_redis.client() as client:
        delivered = queued_event_ids(client)
    assert set(delivered) == set(ids)
    doubled = duplicates(delivered)
    assert doubled == {event_id: 2 for event_id in sent_not_marked}
    output_log.add_text(
        "sigkill-duplicates",
        f"duplicates after SIGKILL between publish and mark: {len(doubled)} of {len(ids)}",
    )
    rows = outbox_rows()
    assert all(row.attempts == 0 for row in rows)
