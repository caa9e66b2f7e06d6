"""The one way writers add events to an outbox: inside their own transaction.

The caller's session commits the business change and the event together, so
an event exists exactly when its change does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.settings import get_settings
from outbox.errors import InvalidOutboxEvent
from outbox.models import OUTBOX_MODELS

#: Maximum lengths, in characters, of the text fields; they match the column sizes.
MAX_EVENT_TYPE_CHARS = 128
MAX_AGGREGATE_ID_CHARS = 128
MAX_AGGREGATE_TYPE_CHARS = 64


@dataclass(frozen=True)
class OutboxEvent:
    """One event to enqueue; ``event_id`` is generated when not given."""

    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: Any
    headers: Mapping[str, Any] = field(default_factory=dict)
    event_id: uuid.UUID | None = None


def _require_text(name: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidOutboxEvent(name, "must be a non-empty string")
    if len(value) > max_chars:
        raise InvalidOutboxEvent(name, f"is {len(value)} characters, the maximum is {max_chars}")
    return value


def validate_event(stream: str, event: OutboxEvent, max_payload_bytes: int) -> dict[str, Any]:
    """Return the row values for ``event``, or raise InvalidOutboxEvent naming the bad field."""
    if stream not in OUTBOX_MODELS:
        known = ", ".join(sorted(OUTBOX_MODELS))
        raise InvalidOutboxEvent("stream", f"unknown stream {stream!r}; expected one of {known}")
    aggregate_type = _require_text("aggregate_type", event.aggregate_type, MAX_AGGREGATE_TYPE_CHARS)
    aggregate_id = _require_text("aggregate_id", event.aggregate_id, MAX_AGGREGATE_ID_CHARS)
    event_type = _require_text("event_type", event.event_type, MAX_EVENT_TYPE_CHARS)

    try:
        encoded = json.dumps(event.payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidOutboxEvent("payload", f"is not JSON-serializable: {exc}") from None
    size = len(encoded.encode("utf-8"))
    if size > max_payload_bytes:
        raise InvalidOutboxEvent(
            "payload", f"is {size} bytes as JSON, the maximum is {max_payload_bytes}"
        )

    try:
        headers = json.loads(json.dumps(dict(event.headers), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidOutboxEvent("headers", f"are not JSON-serializable: {exc}") from None

    return {
        "event_id": event.event_id or uuid.uuid4(),
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "event_type": event_type,
        "payload": event.payload,
        "headers": headers,
    }


def enqueue_many(session: Session, stream: str, events: Iterable[OutboxEvent]) -> list[uuid.UUID]:
    """Add ``events`` to ``stream``'s outbox in the caller's transaction; returns their ids.

    Every event is validated before any row is written, so one bad event
    writes nothing. Raises InvalidOutboxEvent.
    """
    max_payload_bytes = get_settings().outbox_max_payload_bytes
    rows = [validate_event(stream, event, max_payload_bytes) for event in events]
    if rows:
        session.execute(insert(OUTBOX_MODELS[stream].__table__), rows)  # type: ignore[attr-defined]
    return [row["event_id"] for row in rows]


def enqueue(
    session: Session,
    stream: str,
    *,
    aggregate_type: str,
    aggregate_id: str,
    event_type: str,
    payload: Any,
    headers: Mapping[str, Any] | None = None,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Add one event to ``stream``'s outbox in the caller's transaction; returns its event id."""
    event = OutboxEvent(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type=event_type,
        payload=payload,
        headers=headers or {},
        event_id=event_id,
    )
    return enqueue_many(session, stream, [event])[0]
