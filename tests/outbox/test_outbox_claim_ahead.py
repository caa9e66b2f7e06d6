"""Claiming the next batch while the current one is published keeps each aggregate's order."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

import pytest
from sqlalchemy import text

from app.db import create_database_engine, get_engine
from app.settings import get_settings
from outbox.outcome import OutboxOutcome
from outbox.poller import _drain_with
from outbox.publisher import OutboxMessage, Publisher, PublishResult, PublishStatus
from outbox.streams import stream_route
from tests.conftest import point_settings_at
from tests.outbox.outbox_testing import ROUTED_EVENT_TYPE, add_events, rows_by_event_id

#: Seconds the first batch waits for the next one to be claimed.
CLAIM_AHEAD_WAIT_SECONDS = 10.0


def wait_for_claim_ahead(database_url: str) -> None:
    """Wait until two transactions of this database are open and idle.

    They are the batch being published and the next batch, claimed ahead.
    """
    engine = create_database_engine(database_url)
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state = 'idle in transaction'"
    )
    try:
        deadline = time.monotonic() + CLAIM_AHEAD_WAIT_SECONDS
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if connection.execute(query).scalar_one() >= 2:
                    return
            time.sleep(0.01)
        raise AssertionError("the next batch was not claimed while the first was published")
    finally:
        engine.dispose()


class DeferringPublisher:
    """Accepts every message, except that the first offer of each deferred event is not sent.

    A real publisher returns NOT_SENT for messages it did not start before the
    batch's deadline, and this one does it for chosen events. Before it returns
    the results of its first batch, it waits until the next batch has been claimed.
    """

    reads_stored_json = True
    broken = False

    def __init__(self, deferred_once: set[uuid.UUID], database_url: str) -> None:
        self.deferred_once = set(deferred_once)
        self.database_url = database_url
        self.accepted: list[uuid.UUID] = []

    def publish_batch(
        self, messages: Sequence[OutboxMessage], deadline: float | None = None
    ) -> list[PublishResult]:
        if not self.accepted:
            wait_for_claim_ahead(self.database_url)
        results = []
        for message in messages:
            if message.event_id in self.deferred_once:
                self.deferred_once.discard(message.event_id)
                results.append(PublishResult(message.event_id, PublishStatus.NOT_SENT))
            else:
                self.accepted.append(message.event_id)
                results.append(PublishResult(message.event_id, PublishStatus.ACCEPTED))
        return results


@pytest.mark.postgres
def test_deferred_row_keeps_aggregate_order(
    pg_database_url: str,
) -> None:
    point_settings_at(OUTBOX_BATCH_SIZE="2")
    try:
        ids = add_events(
            "wallet",
            [
                ("a", ROUTED_EVENT_TYPE),
                ("x", ROUTED_EVENT_TYPE),
                ("x", ROUTED_EVENT_TYPE),
                ("b", ROUTED_EVENT_TYPE),
                ("x", ROUTED_EVENT_TYPE),
                ("c", ROUTED_EVENT_TYPE),
            ],
        )
        a1, x1, x2, b1, x3, c1 = ids
        settings = get_settings()
        publisher = DeferringPublisher({x1}, pg_database_url)
        outcome = OutboxOutcome(loop="outbox.wallet")

        _drain_with(
            cast(Publisher, publisher),
            get_engine(),
            stream_route("wallet", settings),
            settings,
            outcome,
        )
    finally:
        point_settings_at(OUTBOX_BATCH_SIZE=None)

    assert outcome.ok
    assert outcome.counts["deferred"] == 1
    assert sorted(publisher.accepted) == sorted(ids)
    order: dict[Any, int] = {event_id: index for index, event_id in enumerate(publisher.accepted)}
    assert order[x1] < order[x2] < order[x3]
    assert all(row.published_at is not None for row in rows_by_event_id("wallet").values())
    assert {a1, b1, c1} <= set(publisher.accepted)
