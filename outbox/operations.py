"""Operator views and actions: stream status, and requeue or discard of parked rows.

Every requeue and discard writes an OutboxOperatorAction row with who did it
and why, in the same transaction as the change, and is logged with the ids.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from app.db import database_now
from app.logs import log_context
from outbox.models import OUTBOX_MODELS, OutboxOperatorAction
from outbox.poller import outbox_table

logger = logging.getLogger(__name__)

#: Parked rows listed per stream by the status command; the count covers all of them.
MAX_PARKED_ROWS_LISTED = 50

OperatorAction = Literal["requeue", "discard"]
PAST_TENSE: dict[str, str] = {"requeue": "requeued", "discard": "discarded"}


class OperatorActionRejected(ValueError):
    """A requeue or discard that names a row that does not exist or is not parked."""


@dataclass(frozen=True)
class ParkedRow:
    event_id: str
    aggregate_type: str
    aggregate_id: str
    event_type: str
    attempts: int
    last_error: str | None
    parked_at: datetime | None


@dataclass(frozen=True)
class StreamStatus:
    """One stream's backlog (publishable rows), oldest unpublished age and parked rows."""

    stream: str
    backlog: int
    oldest_unpublished_age_seconds: float | None
    parked: int
    parked_rows: list[ParkedRow]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "backlog": self.backlog,
            "oldest_unpublished_age_seconds": self.oldest_unpublished_age_seconds,
            "parked": self.parked,
            "parked_rows": [
                {
                    **row.__dict__,
                    "parked_at": row.parked_at.isoformat() if row.parked_at else None,
                }
                for row in self.parked_rows
            ],
        }


def _undelivered(table: Table) -> Any:
    return (table.c.published_at.is_(None)) & (table.c.discarded_at.is_(None))


def stream_status(session: Session, stream: str) -> StreamStatus:
    """Return ``stream``'s status; ages are measured by the database clock."""
    table = outbox_table(stream)
    now = database_now(session)

    backlog = session.scalar(
        select(func.count()).where(_undelivered(table), table.c.parked_at.is_(None))
    )
    oldest = session.scalar(select(func.min(table.c.created_at)).where(_undelivered(table)))
    parked_where = _undelivered(table) & table.c.parked_at.is_not(None)
    parked = session.scalar(select(func.count()).where(parked_where))
    parked_rows = session.execute(
        select(table).where(parked_where).order_by(table.c.id).limit(MAX_PARKED_ROWS_LISTED)
    )

    oldest_age = None
    if oldest is not None:
        oldest_age = max(0.0, (now - oldest).total_seconds())

    return StreamStatus(
        stream=stream,
        backlog=int(backlog or 0),
        oldest_unpublished_age_seconds=oldest_age,
        parked=int(parked or 0),
        parked_rows=[
            ParkedRow(
                event_id=str(row.event_id),
                aggregate_type=row.aggregate_type,
                aggregate_id=row.aggregate_id,
                event_type=row.event_type,
                attempts=row.attempts,
                last_error=row.last_error,
                parked_at=row.parked_at,
            )
            for row in parked_rows
        ],
    )


def _find_parked(session: Session, event_id: uuid.UUID, streams: Sequence[str]) -> tuple[str, int]:
    """Return the stream and row id of parked row ``event_id``; raises OperatorActionRejected."""
    for stream in streams:
        table = outbox_table(stream)
        row = session.execute(
            select(table.c.id, table.c.parked_at, table.c.published_at, table.c.discarded_at)
            .where(table.c.event_id == event_id)
            .with_for_update()
        ).first()
        if row is None:
            continue
        if row.discarded_at is not None:
            raise OperatorActionRejected(
                f"event {event_id} in stream {stream} is already discarded"
            )
        if row.published_at is not None:
            raise OperatorActionRejected(f"event {event_id} in stream {stream} is published")
        if row.parked_at is None:
            raise OperatorActionRejected(
                f"event {event_id} in stream {stream} is not parked; only parked rows can be"
                " requeued or discarded"
            )
        return stream, int(row.id)
    raise OperatorActionRejected(
        f"event {event_id} not found in outbox streams {', '.join(streams)}"
    )


def apply_operator_action(
    session: Session,
    action: OperatorAction,
    event_ids: Sequence[uuid.UUID],
    *,
    reason: str,
    actor: str,
    stream: str | None = None,
) -> list[tuple[str, uuid.UUID]]:
    """Requeue or discard the parked rows ``event_ids``; returns (stream, event id) of each.

    Requeue makes a row publishable again with zero attempts. Discard keeps
    the row for audit with ``discarded_at`` set, and it stops blocking later
    rows of its aggregate. Either every row is changed or, when one is
    missing or not parked, none is: raises OperatorActionRejected.
    """
    if not reason.strip():
        raise OperatorActionRejected("a non-empty --reason is required")
    if not event_ids:
        raise OperatorActionRejected("at least one --event-id is required")
    streams = [stream] if stream is not None else list(OUTBOX_MODELS)

    found = [(event_id, *_find_parked(session, event_id, streams)) for event_id in event_ids]
    now = database_now(session)

    changed: list[tuple[str, uuid.UUID]] = []
    for event_id, row_stream, row_id in found:
        table = outbox_table(row_stream)
        if action == "requeue":
            values: dict[str, Any] = {"parked_at": None, "attempts": 0, "next_attempt_at": None}
        else:
            values = {"discarded_at": now}
        session.execute(update(table).where(table.c.id == row_id).values(**values))
        session.execute(
            insert(OutboxOperatorAction).values(
                stream=row_stream,
                event_id=event_id,
                action=action,
                reason=reason,
                actor=actor,
                created_at=now,
            )
        )
        with log_context(event_id=str(event_id)):
            logger.warning(
                "outbox row %s by %s in stream %s: %s",
                PAST_TENSE[action],
                actor,
                row_stream,
                reason,
            )
        changed.append((row_stream, event_id))
    return changed
