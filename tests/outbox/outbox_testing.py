"""Helpers shared by the outbox tests: enqueueing, row and freshness reads, broker reads."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from kombu import Connection, Exchange, Queue
from sqlalchemy import select

from app.celery_app import create_celery_app
from app.db import transaction
from app.settings import get_settings
from outbox.enqueue import OutboxEvent, enqueue_many
from outbox.poller import outbox_table
from tests.conftest import point_settings_at

#: Event type routed to the test queue; any other event type is unroutable.
ROUTED_EVENT_TYPE = "wallet.credited"
UNROUTED_EVENT_TYPE = "wallet.debited"


def add_events(stream: str, events: list[tuple[str, str]]) -> list[uuid.UUID]:
    """Enqueue one event per (aggregate id, event type), payload numbered in order."""
    with transaction() as session:
        return enqueue_many(
            session,
            stream,
            [
                OutboxEvent(
                    aggregate_type="wallet",
                    aggregate_id=aggregate_id,
                    event_type=event_type,
                    payload={"sequence": index, "amount_minor": 100 + index},
                    headers={"trace_id": f"trace-{index}"},
                )
                for index, (aggregate_id, event_type) in enumerate(events)
            ],
        )


def rows_by_event_id(stream: str) -> dict[uuid.UUID, Any]:
    table = outbox_table(stream)
    with transaction() as session:
        return {row.event_id: row for row in session.execute(select(table).order_by(table.c.id))}


def make_celery_app() -> Celery:
    import tasks.outbox  # noqa: F401  (registers the outbox tasks on every app)

    app = create_celery_app(get_settings())
    app.set_current()
    return app


def route_only(queue_name: str, binding_key: str = ROUTED_EVENT_TYPE, **env: str) -> None:
    """Point settings at one wallet destination queue bound with ``binding_key``."""
    point_settings_at(OUTBOX_DESTINATIONS=f"wallet:{queue_name}={binding_key}", **env)


def read_queue(broker_url: str, queue_name: str, **transport_options: Any) -> list[Any]:
    """Take every message from ``queue_name`` as a plain kombu consumer does, acking each."""
    messages = []
    with Connection(broker_url, transport_options=transport_options) as connection:
        queue = Queue(queue_name, channel=connection.default_channel)
        while True:
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                return messages
            message.ack()
            messages.append(message)


def delete_amqp_entities(broker_url: str, exchange_name: str, queue_names: list[str]) -> None:
    with Connection(broker_url) as connection:
        channel = connection.default_channel
        for name in queue_names:
            Queue(name, channel=channel).delete()
        Exchange(exchange_name, channel=channel).delete()
