"""The outbox poller: claim a batch, publish it, and record each row's fate in one transaction.

One run drains a stream: it claims batches in id order until no publishable
row is left, the drain budget is spent, or a batch had a failure.

How long locks and transactions are held is bounded by BROKER_TIMEOUT_SECONDS (T):

* a batch's transaction claims its rows, publishes them, and marks them. No
  message is started more than T after the claim, and every broker call
  times out after T, so publishing keeps the transaction open for at most
  about 2T. Messages not started by then stay publishable for the next batch;
* on PostgreSQL the transaction also sets ``lock_timeout`` to T and
  ``idle_in_transaction_session_timeout`` to 3T, so the server ends a
  session that a stuck poller left holding row locks;
* on SQLite the batch holds the database write lock (BEGIN IMMEDIATE) for the
  same bounded time, which also serialises pollers.

At most one poller works on a stream at a time: on PostgreSQL a run first
takes a session-level advisory lock for its stream on a dedicated connection
(``pg_try_advisory_lock``). A run that does not get it returns at once as a
success that claimed nothing. The lock is released at the end of the run, or
by the server when the connection dies. Rows are also claimed with
``FOR UPDATE SKIP LOCKED``, so even overlapping claims never share a row.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Engine,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    exists,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from app.db import database_now, get_engine, transaction
from app.logs import log_context
from app.settings import Settings, get_settings
from outbox.models import OUTBOX_MODELS
from outbox.outcome import OutboxOutcome
from outbox.publisher import (
    BrokerUnavailable,
    OutboxMessage,
    Publisher,
    PublishResult,
    PublishStatus,
    open_publisher,
)
from outbox.row_checks import unpublishable_reason
from outbox.streams import StreamRoute, stream_route

logger = logging.getLogger(__name__)

#: Seconds before the first retry of a failed row; doubled per further attempt.
BACKOFF_INITIAL_SECONDS = 1.0
#: Maximum wait, in seconds, between two attempts of a row.
BACKOFF_MAX_SECONDS = 300.0
#: Up to this many random seconds are added to each wait so failed rows do not retry in step.
BACKOFF_JITTER_SECONDS = 1.0
#: First key of the outbox pollers' PostgreSQL advisory locks; the second key is the stream's.
ADVISORY_LOCK_NAMESPACE = 0x0B0C
#: ``idle_in_transaction_session_timeout`` of a batch, as a multiple of the broker timeout.
IDLE_IN_TRANSACTION_TIMEOUT_FACTOR = 3

#: The columns a batch reads: what a message and the attempt bookkeeping need.
CLAIMED_COLUMNS = (
    "id",
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "event_type",
    "payload",
    "headers",
    "created_at",
    "attempts",
)

_backoff_wait = wait_exponential_jitter(
    initial=BACKOFF_INITIAL_SECONDS, max=BACKOFF_MAX_SECONDS, jitter=BACKOFF_JITTER_SECONDS
)


def backoff_seconds(attempts: int) -> float:
    """Return the wait before the next attempt of a row that has failed ``attempts`` times."""
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempts
    return float(_backoff_wait(state))


def outbox_table(stream: str) -> Table:
    return OUTBOX_MODELS[stream].__table__  # type: ignore[attr-defined]


def publishable_query(table: Table, now: datetime) -> Any:
    """Select the rows that may be published now, in id order.

    A row is publishable when it is neither published, parked nor discarded,
    its next attempt time has come, and no earlier row of its aggregate is
    parked or waiting for its next attempt.
    """
    earlier = table.alias("earlier")
    # OFFSET 0 keeps PostgreSQL from turning the EXISTS into an anti-join. As an
    # anti-join, the planner expects almost no blocking rows and scans the whole
    # table once per claim. As a correlated subquery, it looks each claimed row's
    # aggregate up in the index of unpublished rows.
    blocking_rows = (
        select(literal(1))
        .select_from(earlier)
        .where(
            earlier.c.aggregate_type == table.c.aggregate_type,
            earlier.c.aggregate_id == table.c.aggregate_id,
            earlier.c.id < table.c.id,
            earlier.c.published_at.is_(None),
            earlier.c.discarded_at.is_(None),
            or_(earlier.c.parked_at.is_not(None), earlier.c.next_attempt_at > now),
        )
        .offset(0)
    )
    blocked_by_earlier = exists(blocking_rows)
    return (
        select(*(table.c[name] for name in CLAIMED_COLUMNS))
        .where(
            table.c.published_at.is_(None),
            table.c.parked_at.is_(None),
            table.c.discarded_at.is_(None),
            or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
            ~blocked_by_earlier,
        )
        .order_by(table.c.id)
    )


def claim_batch(
    session: Session, table: Table, now: datetime, batch_size: int, payload_as_json: bool = False
) -> list[Row[Any]]:
    """Lock and return up to ``batch_size`` publishable rows, skipping rows locked by others.

    With ``payload_as_json`` each row has the payload as stored JSON text in
    ``payload_json`` instead of a decoded ``payload``.
    """
    query = publishable_query(table, now).limit(batch_size)
    if payload_as_json:
        columns = [table.c[name] for name in CLAIMED_COLUMNS if name != "payload"]
        query = query.with_only_columns(
            *columns, cast(table.c.payload, Text).label("payload_json"), maintain_column_froms=True
        )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=table)
    return list(session.execute(query).all())


def has_publishable_rows(engine: Engine, stream: str) -> bool:
    with transaction(engine) as session:
        now = database_now(session)
        query = publishable_query(outbox_table(stream), now).limit(1)
        return session.execute(query).first() is not None


def _advisory_lock_keys(stream: str) -> dict[str, int]:
    # crc32 is stable across processes and hosts; the shift makes it fit PostgreSQL's int4.
    return {"namespace": ADVISORY_LOCK_NAMESPACE, "stream": zlib.crc32(stream.encode()) - 2**31}


@contextmanager
def stream_lock(engine: Engine, stream: str) -> Iterator[bool]:
    """Yield whether this process may poll ``stream``: False while another poller holds it.

    On PostgreSQL this is a session-level advisory lock on a dedicated
    connection, held for the whole block. On SQLite it always yields True,
    because the write lock of each batch transaction serialises pollers.
    """
    if engine.dialect.name != "postgresql":
        yield True
        return

    keys = _advisory_lock_keys(stream)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        acquired = bool(
            connection.execute(
                text("SELECT pg_try_advisory_lock(:namespace, :stream)"), keys
            ).scalar_one()
        )
        try:
            yield acquired
        finally:
            if acquired:
                _release_advisory_lock(connection, keys)


def _release_advisory_lock(connection: Any, keys: dict[str, int]) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:namespace, :stream)"), keys)
    except Exception:
        # A connection that may still hold the lock must not go back to the pool;
        # closing it makes the server release the lock.
        logger.exception("releasing the outbox stream lock failed; closing its connection")
        connection.invalidate()


def _begin_batch(session: Session, broker_timeout_seconds: float) -> datetime:
    """Bound the batch transaction's lock and idle time; return the database's time now.

    On PostgreSQL both limits are set for this transaction only and the clock is
    read in the same statement, one round trip.
    """
    if session.get_bind().dialect.name != "postgresql":
        return database_now(session)
    lock_ms = max(1, int(broker_timeout_seconds * 1000))
    idle_ms = lock_ms * IDLE_IN_TRANSACTION_TIMEOUT_FACTOR
    statement = text(
        "SELECT set_config('lock_timeout', :lock_timeout, true),"
        " set_config('idle_in_transaction_session_timeout', :idle_timeout, true),"
        " clock_timestamp()"
    )
    row = session.execute(
        statement, {"lock_timeout": f"{lock_ms}ms", "idle_timeout": f"{idle_ms}ms"}
    ).one()
    return row[2].astimezone(UTC)


def _message_of(row: Row[Any], payload_as_json: bool) -> OutboxMessage:
    return OutboxMessage(
        event_id=row.event_id,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        event_type=row.event_type,
        payload=None if payload_as_json else row.payload,
        payload_json=row.payload_json if payload_as_json else None,
        headers=dict(row.headers or {}),
        created_at=row.created_at,
    )


def _record_results(
    session: Session,
    table: Table,
    rows: Sequence[Row[Any]],
    results: Sequence[PublishResult],
    now: datetime,
    settings: Settings,
    outcome: OutboxOutcome,
    park_now: set[uuid.UUID],
) -> None:
    """Mark accepted rows published in one statement and record attempts on failed ones.

    Rows in ``park_now`` failed a row check and are parked on this attempt.
    """
    published_ids: list[int] = []
    failures: list[dict[str, Any]] = []

    for row, result in zip(rows, results, strict=True):
        if result.status is PublishStatus.ACCEPTED:
            published_ids.append(row.id)
            continue
        if result.status is PublishStatus.NOT_SENT:
            outcome.add("deferred")
            continue

        attempts = row.attempts + 1
        error = result.error or "unknown publish error"
        parked = attempts >= settings.outbox_max_attempts or row.event_id in park_now
        wait_seconds = backoff_seconds(attempts)
        failures.append(
            {
                "row_id": row.id,
                "attempts": attempts,
                "error": error,
                "next_attempt_at": now + timedelta(seconds=wait_seconds),
                "parked_at": now if parked else None,
            }
        )
        outcome.add("parked" if parked else "failed")
        outcome.add_error(str(row.event_id), error)
        with log_context(event_id=str(row.event_id)):
            if parked:
                logger.error(
                    "outbox row parked after %d failed attempt(s), aggregate %s %s: %s",
                    attempts,
                    row.aggregate_type,
                    row.aggregate_id,
                    error,
                )
            else:
                logger.warning(
                    "outbox publish failed (attempt %d of %d), retry in %.1fs: %s",
                    attempts,
                    settings.outbox_max_attempts,
                    wait_seconds,
                    error,
                )

    if published_ids:
        session.execute(_mark_published(session, table, published_ids), {"published_at": now})
        outcome.add("published", len(published_ids))

    if failures:
        failed_update = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(
                attempts=bindparam("attempts"),
                last_error=bindparam("error"),
                next_attempt_at=bindparam("next_attempt_at"),
                parked_at=bindparam("parked_at"),
            )
        )
        session.connection().execute(failed_update, failures)


def _mark_published(session: Session, table: Table, row_ids: list[int]) -> Any:
    """Return the UPDATE that sets ``published_at`` on ``row_ids``.

    On PostgreSQL the ids are one array parameter, so the statement text is the
    same for every batch size; SQLite gets an ``IN`` list.
    """
    statement = update(table).values(published_at=bindparam("published_at"))
    if session.get_bind().dialect.name == "postgresql":
        ids = bindparam("row_ids", value=row_ids, type_=postgresql.ARRAY(BigInteger))
        return statement.where(table.c.id == any_(ids))
    return statement.where(table.c.id.in_(row_ids))


def poll_batch(
    engine: Engine,
    route: StreamRoute,
    publisher: Publisher,
    settings: Settings,
    outcome: OutboxOutcome,
) -> int:
    """Claim, publish and record one batch in one transaction; return the number of rows claimed."""
    table = outbox_table(route.stream)
    with transaction(engine) as session:
        now = _begin_batch(session, settings.broker_timeout_seconds)
        rows = claim_batch(
            session, table, now, settings.outbox_batch_size, publisher.reads_payload_json
        )
        if not rows:
            return 0

        messages = [_message_of(row, publisher.reads_payload_json) for row in rows]
        results, park_now = _publish_checked(publisher, messages, settings)

        marked_at = database_now(session)
        _record_results(session, table, rows, results, marked_at, settings, outcome, park_now)
    return len(rows)


def _publish_checked(
    publisher: Publisher, messages: list[OutboxMessage], settings: Settings
) -> tuple[list[PublishResult], set[uuid.UUID]]:
    """Publish the messages that pass the row checks; return one result per message.

    A message that fails a check is not sent and its event id is returned in
    the second value, to be parked at once. Later messages of its aggregate
    are not sent either, so the aggregate's order holds.
    """
    park_now: set[uuid.UUID] = set()
    blocked_aggregates: set[tuple[str, str]] = set()
    preset: dict[uuid.UUID, PublishResult] = {}
    sendable: list[OutboxMessage] = []

    for message in messages:
        aggregate = (message.aggregate_type, message.aggregate_id)
        if aggregate in blocked_aggregates:
            preset[message.event_id] = PublishResult(message.event_id, PublishStatus.NOT_SENT)
            continue
        reason = unpublishable_reason(message, settings.outbox_max_payload_bytes)
        if reason is not None:
            preset[message.event_id] = PublishResult(message.event_id, PublishStatus.FAILED, reason)
            park_now.add(message.event_id)
            blocked_aggregates.add(aggregate)
            continue
        sendable.append(message)

    publish_deadline = time.monotonic() + settings.broker_timeout_seconds
    sent = publisher.publish_batch(sendable, deadline=publish_deadline) if sendable else []
    sent_by_id = {result.event_id: result for result in sent}
    results = [preset.get(m.event_id) or sent_by_id[m.event_id] for m in messages]
    return results, park_now


def drain_stream(
    stream: str, settings: Settings | None = None, engine: Engine | None = None
) -> OutboxOutcome:
    """Publish ``stream``'s publishable rows until none is left or the drain budget is spent.

    Returns the outcome; the caller turns failed or parked rows into
    OutboxPublishFailure. Each batch is committed before the next is claimed,
    so rows published before a failure stay published.
    """
    settings = settings or get_settings()
    engine = engine or get_engine()
    route = stream_route(stream, settings)
    outcome = OutboxOutcome(loop=route.loop)
    outcome.details["stream"] = stream

    with stream_lock(engine, stream) as acquired:
        if not acquired:
            logger.info("outbox stream %s is being polled by another poller; skipping", stream)
            outcome.details["skipped"] = "another poller holds the stream lock"
            return outcome

        if not has_publishable_rows(engine, stream):
            return outcome

        try:
            publisher = open_publisher(settings, route)
        except BrokerUnavailable as exc:
            logger.error("outbox stream %s: broker unavailable, nothing claimed: %s", stream, exc)
            outcome.add("broker_unavailable")
            outcome.add_error("broker", str(exc))
            return outcome

        with publisher:
            _drain_with(publisher, engine, route, settings, outcome)
    return outcome


def _drain_with(
    publisher: Publisher,
    engine: Engine,
    route: StreamRoute,
    settings: Settings,
    outcome: OutboxOutcome,
) -> None:
    budget_ends_at = time.monotonic() + settings.outbox_drain_budget_seconds
    batches = 0

    while True:
        claimed = poll_batch(engine, route, publisher, settings, outcome)
        if claimed:
            batches += 1
        outcome.details["batches"] = batches

        if claimed == 0:
            return
        # A failed row waits for its backoff, so retrying within this run would
        # spin; the next scheduled run takes the rest of the stream.
        if not outcome.ok or publisher.broken:
            return
        if time.monotonic() >= budget_ends_at:
            logger.info(
                "outbox stream %s: drain budget of %gs spent after %d batches",
                route.stream,
                settings.outbox_drain_budget_seconds,
                batches,
            )
            outcome.details["budget_spent"] = True
            return
