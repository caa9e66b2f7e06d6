"""The one way writers add events to an outbox: inside their own transaction.

The caller's session commits the business change and the event together, so
an event exists exactly when its change does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, text
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


def enqueue_encoded(
    session: Session,
    stream: str,
    *,
    aggregate_type: str,
    event_type: str,
    event_ids: Sequence[uuid.UUID],
    aggregate_ids: Sequence[str],
    payloads_json: Sequence[str],
    headers_json: Sequence[str],
) -> None:
    """Add events of one type whose payloads and headers are JSON text already, in bulk.

    The same rules as :func:`enqueue_many` apply, checked before any row is
    written: a known stream, non-empty text fields within their lengths, and
    payloads within ``OUTBOX_MAX_PAYLOAD_BYTES``. The texts must be compact
    JSON (``separators=(",", ":")``), so their size is the one enqueue_many
    measures. On PostgreSQL all rows go in one ``INSERT ... SELECT FROM unnest``,
    and the database rejects a text that is not JSON, which fails the whole
    statement. Raises InvalidOutboxEvent.
    """
    columns = (event_ids, aggregate_ids, payloads_json, headers_json)
    if len({len(column) for column in columns}) != 1:
        raise ValueError(
            "event_ids, aggregate_ids, payloads_json and headers_json differ in length"
        )
    if stream not in OUTBOX_MODELS:
        known = ", ".join(sorted(OUTBOX_MODELS))
        raise InvalidOutboxEvent("stream", f"unknown stream {stream!r}; expected one of {known}")
    _require_text("aggregate_type", aggregate_type, MAX_AGGREGATE_TYPE_CHARS)
    _require_text("event_type", event_type, MAX_EVENT_TYPE_CHARS)
    for aggregate_id in aggregate_ids:
        _require_text("aggregate_id", aggregate_id, MAX_AGGREGATE_ID_CHARS)
    max_payload_bytes = get_settings().outbox_max_payload_bytes
    for payload in payloads_json:
        size = len(payload.encode("utf-8"))
        if size > max_payload_bytes:
            raise InvalidOutboxEvent(
                "payload", f"is {size} bytes as JSON, the maximum is {max_payload_bytes}"
            )
    if not event_ids:
        return

    table = OUTBOX_MODELS[stream].__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name != "postgresql":
        rows = [
            {
                "event_id": event_id,
                "aggregate_type": aggregate_type,
                "aggregate_id": aggregate_id,
                "event_type": event_type,
                "payload": json.loads(payload),
                "headers": json.loads(headers),
            }
            for event_id, aggregate_id, payload, headers in zip(*columns, strict=True)
        ]
        session.execute(insert(table), rows)
        return
    # One JSON array of rows, which the database parses much faster than the driver
    # escapes array parameters. The table name comes from OUTBOX_MODELS, never from
    # the caller's text.
    statement = text(
        f"INSERT INTO {table.name}"  # noqa: S608
        " (event_id, aggregate_type, aggregate_id, event_type, payload, headers)"
        " SELECT CAST(r->>0 AS uuid), :aggregate_type, r->>1, :event_type,"
        " CAST(r->>2 AS jsonb), CAST(r->>3 AS jsonb)"
        " FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r"
    )
    values = [
        (str(event_id), aggregate_id, payload, headers)
        for event_id, aggregate_id, payload, headers in zip(*columns, strict=True)
    ]
    session.execute(
        statement,
        {
            "aggregate_type": aggregate_type,
            "event_type": event_type,
            "rows": json.dumps(values, separators=(",", ":")),
        },
    )


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
