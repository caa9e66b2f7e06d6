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

import contextvars
import functools
import logging
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
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
from sqlalchemy.sql.expression import BindParameter, FromClause
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from app.db import UtcDateTime, database_now, get_engine, transaction
from app.logs import log_context
from app.redaction import describe_error
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


def publishable_query(table: FromClause, now: datetime | BindParameter[datetime]) -> Any:
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
    session: Session, table: Table, now: datetime, batch_size: int, stored_json: bool = False
) -> list[Row[Any]]:
    """Claim up to ``batch_size`` publishable rows and mark them published as of ``now``.

    Returns the claimed rows in id order. Rows locked by another transaction
    are skipped. The mark is provisional: it commits with the batch's
    transaction, and :func:`_record_results` clears it again on every row the
    broker did not accept. Claiming and marking in one statement writes each
    row once, where a ``SELECT ... FOR UPDATE`` followed by an ``UPDATE``
    writes it twice. With ``stored_json`` each row has the payload and the
    headers as stored JSON text in ``payload_json`` and ``headers_json``
    instead of decoded ``payload`` and ``headers``.
    """
    dialect = session.get_bind().dialect.name
    statement = _claim_statement(table, batch_size, stored_json, dialect == "postgresql")
    rows = list(session.execute(statement, {"now": now}).all())
    rows.sort(key=lambda row: row.id)
    return rows


@functools.lru_cache(maxsize=64)
def _claim_statement(table: Table, batch_size: int, stored_json: bool, skip_locked: bool) -> Any:
    """Build the claim of :func:`claim_batch` once per table and batch size."""
    now = bindparam("now", type_=UtcDateTime)
    # An alias, so that the subquery is not correlated with the updated table.
    candidate = table.alias("candidate")
    claimed_ids = (
        publishable_query(candidate, now).with_only_columns(candidate.c.id).limit(batch_size)
    )
    if skip_locked:
        claimed_ids = claimed_ids.with_for_update(skip_locked=True, of=candidate)
    columns: list[Any] = [table.c[name] for name in CLAIMED_COLUMNS]
    if stored_json:
        columns = [table.c[name] for name in CLAIMED_COLUMNS if name not in ("payload", "headers")]
        columns.append(cast(table.c.payload, Text).label("payload_json"))
        columns.append(cast(table.c.headers, Text).label("headers_json"))
        columns.append(cast(table.c.event_id, Text).label("event_id_text"))
    return (
        update(table)
        .where(table.c.id.in_(claimed_ids))
        .values(published_at=now)
        .returning(*columns)
    )


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


def _message_of(row: Row[Any], stored_json: bool) -> OutboxMessage:
    if stored_json:
        # Unpacked by position: the columns of _claim_statement with stored_json.
        values: tuple[Any, ...] = tuple(row)
        (
            _row_id,
            event_id,
            aggregate_type,
            aggregate_id,
            event_type,
            created_at,
            _attempts,
            payload_json,
            headers_json,
            event_id_text,
        ) = values
        return OutboxMessage(
            event_id,
            aggregate_type,
            aggregate_id,
            event_type,
            None,
            None,
            created_at,
            payload_json,
            headers_json,
            event_id_text,
        )
    return OutboxMessage(
        event_id=row.event_id,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        event_type=row.event_type,
        payload=row.payload,
        headers=dict(row.headers or {}),
        created_at=row.created_at,
    )


def _record_results(
    session: Session,
    table: Table,
    rows: Sequence[Row[Any]],
    results: Sequence[PublishResult],
    settings: Settings,
    outcome: OutboxOutcome,
    park_now: set[uuid.UUID],
) -> None:
    """Keep the published mark of accepted rows, clear it on the rest, and record failed attempts.

    Rows in ``park_now`` failed a row check and are parked on this attempt.
    """
    published = 0
    deferred_ids: list[int] = []
    failures: list[dict[str, Any]] = []
    # Read once, on the first failure: the backoff counts from after the publish.
    now: datetime | None = None

    for row, result in zip(rows, results, strict=True):
        if result.status is PublishStatus.ACCEPTED:
            published += 1
            continue
        if result.status is PublishStatus.NOT_SENT:
            deferred_ids.append(row.id)
            outcome.add("deferred")
            continue

        if now is None:
            now = database_now(session)
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

    if published:
        outcome.add("published", published)

    if deferred_ids:
        session.execute(_clear_published(session, table, deferred_ids))

    if failures:
        failed_update = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(
                published_at=None,
                attempts=bindparam("attempts"),
                last_error=bindparam("error"),
                next_attempt_at=bindparam("next_attempt_at"),
                parked_at=bindparam("parked_at"),
            )
        )
        session.connection().execute(failed_update, failures)


def _clear_published(session: Session, table: Table, row_ids: list[int]) -> Any:
    """Return the UPDATE that clears the provisional ``published_at`` of ``row_ids``.

    On PostgreSQL the ids are one array parameter, so the statement text is the
    same for every number of rows. SQLite gets an ``IN`` list.
    """
    statement = update(table).values(published_at=None)
    if session.get_bind().dialect.name == "postgresql":
        ids = bindparam("row_ids", value=row_ids, type_=postgresql.ARRAY(BigInteger))
        return statement.where(table.c.id == any_(ids))
    return statement.where(table.c.id.in_(row_ids))


@dataclass
class _ClaimedBatch:
    """An open batch transaction and the rows it claimed and marked published."""

    session: Session
    rows: list[Row[Any]]
    #: ``time.monotonic()`` when the claim returned. No message starts more than T later.
    claimed_at: float

    def close(self) -> None:
        """End the transaction: it rolls back unless it was committed."""
        self.session.close()


def _claim(engine: Engine, table: Table, settings: Settings, stored_json: bool) -> _ClaimedBatch:
    """Open a batch transaction and claim its rows (see :func:`claim_batch`)."""
    session = Session(engine, expire_on_commit=False)
    try:
        session.begin()
        now = _begin_batch(session, settings.broker_timeout_seconds)
        rows = claim_batch(session, table, now, settings.outbox_batch_size, stored_json)
    except BaseException:
        session.close()
        raise
    return _ClaimedBatch(session, rows, time.monotonic())


def _publish_and_commit(
    batch: _ClaimedBatch,
    table: Table,
    publisher: Publisher,
    settings: Settings,
    outcome: OutboxOutcome,
) -> bool:
    """Publish a claimed batch, record each row's fate and commit.

    Returns True when the broker accepted every row. The transaction is closed
    in every case, and an error rolls it back.
    """
    try:
        messages = [_message_of(row, publisher.reads_stored_json) for row in batch.rows]
        deadline = batch.claimed_at + settings.broker_timeout_seconds
        results, park_now = _publish_checked(publisher, messages, settings, deadline)
        _record_results(batch.session, table, batch.rows, results, settings, outcome, park_now)
        batch.session.commit()
    finally:
        batch.close()
    return all(result.accepted for result in results)


def poll_batch(
    engine: Engine,
    route: StreamRoute,
    publisher: Publisher,
    settings: Settings,
    outcome: OutboxOutcome,
) -> int:
    """Claim, publish and record one batch in one transaction; return the number of rows claimed.

    The rows are marked published when they are claimed, and the mark is
    cleared on every row the broker did not accept before the transaction
    commits. A process that dies before the commit leaves every row as it was.
    """
    table = outbox_table(route.stream)
    batch = _claim(engine, table, settings, publisher.reads_stored_json)
    if not batch.rows:
        batch.close()
        return 0
    _publish_and_commit(batch, table, publisher, settings, outcome)
    return len(batch.rows)


def _publish_checked(
    publisher: Publisher, messages: list[OutboxMessage], settings: Settings, deadline: float
) -> tuple[list[PublishResult], set[uuid.UUID]]:
    """Publish the messages that pass the row checks; return one result per message.

    A message that fails a check is not sent and its event id is returned in
    the second value, to be parked at once. Later messages of its aggregate
    are not sent either, so the aggregate's order holds.
    """
    park_now: set[uuid.UUID] = set()
    blocked_aggregates: set[tuple[str, str]] = set()
    # One slot per message: a result set here, or None for a message sent below.
    results: list[PublishResult | None] = []
    sendable: list[OutboxMessage] = []
    max_payload_bytes = settings.outbox_max_payload_bytes

    for message in messages:
        aggregate = (message.aggregate_type, message.aggregate_id)
        if blocked_aggregates and aggregate in blocked_aggregates:
            results.append(PublishResult(message.event_id, PublishStatus.NOT_SENT))
            continue
        reason = unpublishable_reason(message, max_payload_bytes)
        if reason is not None:
            results.append(PublishResult(message.event_id, PublishStatus.FAILED, reason))
            park_now.add(message.event_id)
            blocked_aggregates.add(aggregate)
            continue
        results.append(None)
        sendable.append(message)

    # publish_batch returns one result per sendable message, in their order.
    sent = iter(publisher.publish_batch(sendable, deadline=deadline) if sendable else [])
    return [result if result is not None else next(sent) for result in results], park_now


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
    """Publish batches until the stream is drained, a batch failed, or the budget is spent.

    On PostgreSQL the next batch is claimed on a second connection while the
    current one is published, so the database works while this process
    builds and sends messages. The next batch skips the current one's locked
    rows. It is published only after the current batch committed with every
    row accepted. Otherwise it is rolled back, because it may hold later rows
    of an aggregate whose row was not sent, and a fresh claim selects that row again.
    """
    budget_ends_at = time.monotonic() + settings.outbox_drain_budget_seconds
    table = outbox_table(route.stream)
    stored_json = publisher.reads_stored_json
    claim_ahead = engine.dialect.name == "postgresql"
    batches = 0

    def claim() -> _ClaimedBatch:
        return _claim(engine, table, settings, stored_json)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-claim") as executor:
        next_claim: Future[_ClaimedBatch] | None = None
        try:
            while True:
                if next_claim is not None:
                    # Taken out first, so that a failed claim is raised here, not rolled back.
                    claimed_ahead, next_claim = next_claim, None
                    batch = claimed_ahead.result()
                else:
                    batch = claim()
                if not batch.rows:
                    batch.close()
                    return
                batches += 1
                outcome.details["batches"] = batches
                if claim_ahead:
                    # A copy of the log context, so the claim's log lines carry the run's ids.
                    next_claim = executor.submit(contextvars.copy_context().run, claim)

                all_accepted = _publish_and_commit(batch, table, publisher, settings, outcome)

                # A failed row waits for its backoff, so retrying within this run would
                # spin. The next scheduled run takes the rest of the stream.
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
                if not all_accepted and next_claim is not None:
                    _roll_back_claim(next_claim, route.stream)
                    next_claim = None
        finally:
            if next_claim is not None:
                _roll_back_claim(next_claim, route.stream)


def _roll_back_claim(claim: Future[_ClaimedBatch], stream: str) -> None:
    """Wait for a claim made ahead and roll it back, so its rows stay publishable."""
    try:
        claim.result().close()
    except Exception as exc:  # noqa: BLE001 - the claim is discarded; its error changes nothing
        logger.warning(
            "outbox stream %s: a batch claimed ahead failed and was discarded: %s",
            stream,
            describe_error(exc),
        )
