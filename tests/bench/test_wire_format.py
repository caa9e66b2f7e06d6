"""The Redis publisher's stored message is the one kombu's own publish stores."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from outbox.publisher import PERSISTENT_DELIVERY_MODE, OutboxMessage, redis_stored_message

EXCHANGE = "bench.wire.exchange"
QUEUE = "bench.wire.queue"
ROUTING_KEY = "wallet.credited"
DELIVERY_TAG = "tag-1"


def _message(payload_json: str | None = None) -> OutboxMessage:
    return OutboxMessage(
        event_id=uuid.UUID("8a1c2f9e-4a57-4d0e-9d43-3c1b5f0a7e21"),
        aggregate_type="wallet",
        aggregate_id="wallet-7",
        event_type=ROUTING_KEY,
        payload={"amount_minor": 1250, "currency": "PHP", "note": 'caf\u00e9 "quoted"'},
        headers={"trace_id": "t-1"},
        created_at=datetime(2026, 12, 3, 10, 30, tzinfo=UTC),
        payload_json=payload_json,
    )


def _kombu_stored(redis_url: str, message: OutboxMessage) -> str:
    """Publish ``message`` with kombu's Producer.publish and return the raw queue entry."""
    exchange = Exchange(EXCHANGE, type="topic", durable=True)
    with Connection(redis_url) as connection:
        channel = connection.default_channel
        Queue(QUEUE, exchange=exchange, routing_key="#", durable=True).declare(channel=channel)
        Producer(channel, exchange=exchange, auto_declare=False).publish(
            message.payload,
            serializer="json",
            routing_key=message.event_type,
            delivery_mode=PERSISTENT_DELIVERY_MODE,
            message_id=str(message.event_id),
            headers=message.message_headers(),
            retry=False,
        )
    client = redis.Redis.from_url(redis_url)
    stored = client.lpop(QUEUE)
    client.close()
    assert isinstance(stored, bytes)
    return stored.decode()


@pytest.mark.redis
def test_stored_message_equals_kombu_publish(redis_url: str) -> None:
    message = _message()
    kombu_stored = json.loads(_kombu_stored(redis_url, message))
    kombu_stored["properties"]["delivery_tag"] = DELIVERY_TAG

    ours = redis_stored_message(message, EXCHANGE, delivery_tag=DELIVERY_TAG)

    assert json.loads(ours) == kombu_stored
    assert ours == json.dumps(kombu_stored)


def test_stored_message_sends_payload_json_unchanged() -> None:
    payload_json = '{"amount_minor": 1250, "currency": "PHP"}'

    stored = json.loads(redis_stored_message(_message(payload_json), EXCHANGE, "tag-2"))

    assert stored["body"] == "eyJhbW91bnRfbWlub3IiOiAxMjUwLCAiY3VycmVuY3kiOiAiUEhQIn0="
    assert stored["properties"]["delivery_tag"] == "tag-2"
    assert stored["properties"]["message_id"] == "8a1c2f9e-4a57-4d0e-9d43-3c1b5f0a7e21"


@pytest.mark.parametrize(
    "headers_json",
    [
        "{}",
        '{"trace_id": "t-1"}',
        '{"note": "caf\u00e9 \\"quoted\\"", "nested": {"a": [1, 2]}}',
        '{"event_id": "spoofed", "trace_id": "t-1"}',
        '{"aggregate_id": "other", "created_at": "yesterday"}',
    ],
)
def test_stored_headers_text_decodes_alike(headers_json: str) -> None:
    message = _message()._replace(headers=None, headers_json=headers_json)

    headers = json.loads(message.message_headers_json())

    assert headers == {**json.loads(headers_json), **_outbox_headers(message)}
    assert headers == message.message_headers()


def _outbox_headers(message: OutboxMessage) -> dict[str, str]:
    return {
        "event_id": str(message.event_id),
        "event_type": message.event_type,
        "aggregate_type": message.aggregate_type,
        "aggregate_id": message.aggregate_id,
        "created_at": message.created_at.isoformat(),
    }
