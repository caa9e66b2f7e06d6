"""Settlement run records and items: creation, final counts, reports and voiding."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, func, insert, select, text
from sqlalchemy.orm import Session

from app.db import database_now, transaction
from settlement.models import SettlementItem, SettlementRun
from settlement.outcome import SettlementOutcome
from settlement.periods import Period

logger = logging.getLogger(__name__)

#: Prefix of the reason of an item that an earlier run or an existing ledger row had credited.
CREDITED_EARLIER = "credited_earlier"
#: Item counts reported per run, in this order.
COUNT_NAMES = ("eligible", "credited", "credited_earlier", "skipped", "failed", "voided", "pending")


@dataclass(frozen=True)
class PlannedItem:
    """One eligible player's item as computed before any credit.

    ``status`` is ``pending`` (to credit), ``skipped``, ``failed``, or
    ``credited``/``voided`` when an earlier run of the period settled it.
    """

    player_id: int
    currency: str
    basis_minor: int
    amount_minor: int
    status: str
    idempotency_key: str
    reason: str | None = None
    error: str | None = None
    details: dict[str, Any] | None = None


def create_run(
    engine: Engine, kind: str, period: Period, task_id: str | None, hostname: str | None
) -> int:
    """Insert a run record with status ``running``; returns its id."""
    with transaction(engine) as session:
        run = SettlementRun(
            kind=kind,
            period_key=period.key,
            period_start=period.start,
            period_end=period.end,
            status="running",
            started_at=database_now(session),
            credited_amount_minor={},
            failed_player_ids=[],
            task_id=task_id,
            hostname=hostname,
        )
        session.add(run)
        session.flush()
        return run.id


#: Error stored on a run record found still running by a later run of its period.
ABANDONED_RUN_ERROR = "abandoned: the process stopped before finishing this run"


def close_abandoned_runs(engine: Engine, kind: str, period_key: str) -> list[int]:
    """Mark this period's runs still ``running`` as failed; returns their ids.

    Call only while holding the period's run lock, when no other run of the
    period can be in progress. Their items keep their statuses, and the next
    run attempts every player not yet credited.
    """
    with transaction(engine) as session:
        abandoned = list(
            session.scalars(
                select(SettlementRun).where(
                    SettlementRun.kind == kind,
                    SettlementRun.period_key == period_key,
                    SettlementRun.status == "running",
                )
            )
        )
        now = database_now(session)
        for run in abandoned:
            run.status = "failed"
            run.error = ABANDONED_RUN_ERROR
            run.finished_at = now
            logger.warning(
                "settlement %s %s run %s was still marked running and is now failed: %s",
                kind,
                period_key,
                run.id,
                ABANDONED_RUN_ERROR,
            )
        return [run.id for run in abandoned]


#: Planned items sent to the database per INSERT statement while planning.
ITEM_INSERT_ROWS = 5_000

#: One INSERT of a chunk of items (PostgreSQL). The rows arrive as one JSON array of
#: arrays, which the database parses much faster than the driver escapes array
#: parameters, and the statement text does not grow with the chunk.
_JSON_ITEM_INSERT = text(
    "INSERT INTO settlement_items"
    " (run_id, kind, period_key, player_id, currency, basis_minor, amount_minor, status,"
    " idempotency_key, reason, error, attempts, details, updated_at)"
    " SELECT :run_id, :kind, :period_key, CAST(r->>0 AS bigint), r->>1,"
    " CAST(r->>2 AS bigint), CAST(r->>3 AS bigint), r->>4, r->>5, r->>6, r->>7, 0,"
    " CAST(r->>8 AS json), :updated_at"
    " FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r"
)


def insert_items(
    session: Session,
    run_id: int,
    kind: str,
    period_key: str,
    planned: Iterable[PlannedItem],
    chunk_rows: int = ITEM_INSERT_ROWS,
) -> int:
    """Insert one item per planned player, ``chunk_rows`` per statement; returns the count.

    ``planned`` is consumed as it is inserted, so a caller can pass a generator and
    never hold every item in memory.
    """
    now = database_now(session)
    inserted = 0
    for chunk in _chunks(planned, chunk_rows):
        _insert_chunk(session, run_id, kind, period_key, now, chunk)
        inserted += len(chunk)
    return inserted


def _insert_chunk(
    session: Session,
    run_id: int,
    kind: str,
    period_key: str,
    now: datetime,
    chunk: list[PlannedItem],
) -> None:
    """Insert one chunk of items: one JSON parameter on PostgreSQL, a multi-row insert on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_JSON_ITEM_INSERT, _item_parameters(run_id, kind, period_key, now, chunk))
        return
    rows = [_item_row(run_id, kind, period_key, now, item) for item in chunk]
    session.execute(insert(SettlementItem.__table__), rows)  # type: ignore[arg-type]


#: Chunks of planned items waiting for the sending thread of insert_items_overlapped.
OVERLAP_QUEUED_CHUNKS = 2


def insert_items_overlapped(
    session: Session,
    run_id: int,
    kind: str,
    period_key: str,
    planned: Iterable[PlannedItem],
    chunk_rows: int = ITEM_INSERT_ROWS,
) -> int:
    """Like :func:`insert_items`, but a second thread sends each chunk (PostgreSQL).

    The database inserts one chunk while this thread computes the next, so
    ``planned`` must not read through ``session``. Only the sending thread
    uses ``session`` until this returns. The first error of either thread is
    raised here, after the sending thread has stopped.
    """
    now = database_now(session)
    chunks: queue.Queue[list[PlannedItem] | None] = queue.Queue(maxsize=OVERLAP_QUEUED_CHUNKS)
    send_errors: list[BaseException] = []

    def send() -> None:
        while (chunk := chunks.get()) is not None:
            if send_errors:
                continue  # keep taking chunks so that the producer never blocks
            try:
                _insert_chunk(session, run_id, kind, period_key, now, chunk)
            except BaseException as exc:  # noqa: BLE001 - raised again by the calling thread
                send_errors.append(exc)

    sender = threading.Thread(target=send, name=f"settlement-items-{run_id}", daemon=True)
    sender.start()
    inserted = 0
    try:
        for chunk in _chunks(planned, chunk_rows):
            if send_errors:
                break
            chunks.put(chunk)
            inserted += len(chunk)
    finally:
        chunks.put(None)
        sender.join()
    if send_errors:
        raise send_errors[0]
    return inserted


def _chunks(planned: Iterable[PlannedItem], size: int) -> Iterator[list[PlannedItem]]:
    chunk: list[PlannedItem] = []
    for item in planned:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _item_row(
    run_id: int, kind: str, period_key: str, now: datetime, item: PlannedItem
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "kind": kind,
        "period_key": period_key,
        "player_id": item.player_id,
        "currency": item.currency,
        "basis_minor": item.basis_minor,
        "amount_minor": item.amount_minor,
        "status": item.status,
        "idempotency_key": item.idempotency_key,
        "reason": item.reason,
        "error": item.error,
        "attempts": 0,
        "details": item.details,
        "updated_at": now,
    }


def _item_parameters(
    run_id: int, kind: str, period_key: str, now: datetime, chunk: list[PlannedItem]
) -> dict[str, Any]:
    """Turn a chunk of planned items into the parameters of _JSON_ITEM_INSERT."""
    rows = [
        (
            item.player_id,
            item.currency,
            item.basis_minor,
            item.amount_minor,
            item.status,
            item.idempotency_key,
            item.reason,
            item.error,
            # The same text SQLAlchemy's JSON type stores (json.dumps), or NULL.
            None if item.details is None else json.dumps(item.details),
        )
        for item in chunk
    ]
    return {
        "run_id": run_id,
        "kind": kind,
        "period_key": period_key,
        "updated_at": now,
        "rows": json.dumps(rows, separators=(",", ":")),
    }


#: Columns of a pending item that a credit needs, in this order.
_PENDING_COLUMNS = (
    SettlementItem.id,
    SettlementItem.player_id,
    SettlementItem.currency,
    SettlementItem.amount_minor,
    SettlementItem.idempotency_key,
)

PendingRow = tuple[int, int, str, int, str]


def pending_items(session: Session, run_id: int, after_id: int, limit: int) -> list[PendingRow]:
    """Return up to ``limit`` pending items of the run with ids above ``after_id``, by id.

    Each row is (item id, player id, currency, amount in minor units, idempotency key).
    """
    query = (
        select(*_PENDING_COLUMNS)
        .where(
            SettlementItem.run_id == run_id,
            SettlementItem.status == "pending",
            SettlementItem.id > after_id,
        )
        .order_by(SettlementItem.id)
        .limit(limit)
    )
    return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]


def iter_pending_items(
    session: Session, run_id: int, batch_rows: int
) -> Iterator[list[PendingRow]]:
    """Yield the run's pending items by id, ``batch_rows`` at a time, from one query.

    The rows are fetched through a server-side cursor where the driver has one,
    so only one batch is held in memory. Rows are as in :func:`pending_items`.
    """
    query = (
        select(*_PENDING_COLUMNS)
        .where(SettlementItem.run_id == run_id, SettlementItem.status == "pending")
        .order_by(SettlementItem.id)
    )
    result = session.connection().execute(query.execution_options(yield_per=batch_rows))
    for partition in result.partitions():
        yield [tuple(row) for row in partition]  # type: ignore[misc]


def count_pending(session: Session, run_id: int) -> int:
    query = select(func.count()).where(
        SettlementItem.run_id == run_id, SettlementItem.status == "pending"
    )
    return int(session.scalar(query) or 0)


def earlier_settled(session: Session, kind: str, period_key: str) -> dict[int, tuple[str, int]]:
    """Return player id -> (status, run id) of players credited or voided by an earlier run.

    The run id is the first run with that status: later runs carry the item
    over with the same status, but the first one moved the money or voided it.
    """
    query = (
        select(SettlementItem.player_id, SettlementItem.status, func.min(SettlementItem.run_id))
        .where(
            SettlementItem.kind == kind,
            SettlementItem.period_key == period_key,
            SettlementItem.status.in_(("credited", "voided")),
        )
        .group_by(SettlementItem.player_id, SettlementItem.status)
    )
    settled: dict[int, tuple[str, int]] = {}
    for player_id, status, run_id in session.execute(query):
        # A credit outranks a void of the same player, because the money moved.
        if player_id not in settled or status == "credited":
            settled[player_id] = (status, run_id)
    return settled


def count_items(session: Session, run_id: int) -> dict[str, int]:
    """Return the run's item counts by status, plus ``credited_earlier``, from the database."""
    counts = {name: 0 for name in COUNT_NAMES if name != "eligible"}
    earlier = case((SettlementItem.reason.like(f"{CREDITED_EARLIER}%"), 1), else_=0)
    query = (
        select(SettlementItem.status, func.count(), func.sum(earlier))
        .where(SettlementItem.run_id == run_id)
        .group_by(SettlementItem.status)
    )
    for status, count, earlier_count in session.execute(query):
        counts[status] = int(count)
        if status == "credited":
            counts["credited_earlier"] = int(earlier_count or 0)
    return counts


def credited_amounts(session: Session, run_id: int) -> dict[str, int]:
    """Return the minor units this run credited per currency, without earlier credits."""
    query = (
        select(SettlementItem.currency, func.sum(SettlementItem.amount_minor))
        .where(
            SettlementItem.run_id == run_id,
            SettlementItem.status == "credited",
            SettlementItem.reason.is_(None),
        )
        .group_by(SettlementItem.currency)
    )
    return {currency: int(amount) for currency, amount in session.execute(query)}


def failed_player_ids(session: Session, run_id: int) -> list[int]:
    query = (
        select(SettlementItem.player_id)
        .where(SettlementItem.run_id == run_id, SettlementItem.status == "failed")
        .order_by(SettlementItem.player_id)
    )
    return list(session.scalars(query))


def decide_status(eligible: int, counts: dict[str, int]) -> str:
    """Return the run status from its eligible count and final item counts."""
    accounted = counts["credited"] + counts["skipped"] + counts["failed"] + counts["voided"]
    if counts["pending"] or accounted != eligible:
        return "inconsistent"
    if eligible == 0:
        return "empty"
    if counts["failed"] == 0:
        return "succeeded"
    if counts["credited"] == 0:
        return "failed"
    return "partial"


def finish_run(
    engine: Engine, run_id: int, eligible: int, error: str | None = None
) -> SettlementOutcome:
    """Count the run's items, decide its status, write the run record; returns the outcome.

    A run with ``error`` set was aborted and is ``failed`` whatever its counts.
    """
    with transaction(engine) as session:
        run = session.get_one(SettlementRun, run_id, with_for_update=True)
        counts = count_items(session, run_id)
        status = "failed" if error else decide_status(eligible, counts)
        if status == "inconsistent":
            accounted = counts["credited"] + counts["skipped"] + counts["failed"] + counts["voided"]
            error = (
                f"item counts do not add up: eligible {eligible}, accounted {accounted},"
                f" still pending {counts['pending']}"
            )

        run.status = status
        run.finished_at = database_now(session)
        run.eligible_count = eligible
        run.credited_count = counts["credited"]
        run.skipped_count = counts["skipped"]
        run.failed_count = counts["failed"]
        run.voided_count = counts["voided"]
        run.credited_amount_minor = credited_amounts(session, run_id)
        run.failed_player_ids = failed_player_ids(session, run_id)
        run.error = error
        return outcome_of(run, counts)


def record_abort(engine: Engine, run_id: int, error: str) -> None:
    """Mark a run failed with ``error`` when its counts cannot be read; logs if that fails too."""
    try:
        with transaction(engine) as session:
            run = session.get_one(SettlementRun, run_id)
            run.status = "failed"
            run.error = error
            run.finished_at = database_now(session)
    except Exception as exc:  # noqa: BLE001 - the original error is raised by the caller
        logger.error("writing the record of aborted run %s failed: %s", run_id, exc)


def outcome_of(run: SettlementRun, counts: dict[str, int] | None = None) -> SettlementOutcome:
    """Return the outcome of a finished run record."""
    if counts is None:
        counts = {
            "credited": run.credited_count,
            "skipped": run.skipped_count,
            "failed": run.failed_count,
            "voided": run.voided_count,
        }
    all_counts = {"eligible": run.eligible_count, **counts}
    details: dict[str, Any] = {
        "run_id": run.id,
        "kind": run.kind,
        "period_key": run.period_key,
        "period_start": run.period_start.isoformat(),
        "period_end": run.period_end.isoformat(),
        "credited_amount_minor": dict(run.credited_amount_minor),
        "failed_player_ids": list(run.failed_player_ids),
        "duration_seconds": _duration_seconds(run.started_at, run.finished_at),
    }
    if run.error:
        details["error"] = run.error
    return SettlementOutcome(
        loop=f"settlement.{run.kind}", counts=all_counts, details=details, status=run.status
    )


def _duration_seconds(started_at: datetime, finished_at: datetime | None) -> float | None:
    if finished_at is None:
        return None
    return round((finished_at - started_at).total_seconds(), 3)


def run_report(run: SettlementRun) -> dict[str, Any]:
    """Return a JSON-serialisable description of a run record, for the report command."""
    return {
        "run_id": run.id,
        "kind": run.kind,
        "period_key": run.period_key,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_seconds": _duration_seconds(run.started_at, run.finished_at),
        "eligible": run.eligible_count,
        "credited": run.credited_count,
        "skipped": run.skipped_count,
        "failed": run.failed_count,
        "voided": run.voided_count,
        "credited_amount_minor": dict(run.credited_amount_minor),
        "failed_player_ids": list(run.failed_player_ids),
        "error": run.error,
        "task_id": run.task_id,
        "hostname": run.hostname,
    }


def load_runs(session: Session, kind: str, period_key: str) -> list[SettlementRun]:
    query = (
        select(SettlementRun)
        .where(SettlementRun.kind == kind, SettlementRun.period_key == period_key)
        .order_by(SettlementRun.id)
    )
    return list(session.scalars(query))


class VoidRejected(ValueError):
    """A void request for an item that does not exist or is not failed."""


def void_item(
    engine: Engine, run_id: int, player_id: int, reason: str, actor: str
) -> SettlementItem:
    """Mark the failed item of ``player_id`` in run ``run_id`` as not to be paid.

    Later runs of the period carry the player as voided and do not credit
    them. The run's counts move the item from failed to voided. Raises
    VoidRejected when the item is missing or not failed, or ``reason`` is empty.
    """
    if not reason.strip():
        raise VoidRejected("a void needs a non-empty --reason")
    with transaction(engine) as session:
        item = session.scalar(
            select(SettlementItem)
            .where(SettlementItem.run_id == run_id, SettlementItem.player_id == player_id)
            .with_for_update()
        )
        if item is None:
            raise VoidRejected(f"run {run_id} has no item for player {player_id}")
        if item.status != "failed":
            raise VoidRejected(
                f"the item of player {player_id} in run {run_id} is {item.status}; only failed"
                " items can be voided"
            )
        item.status = "voided"
        item.reason = f"voided by {actor}: {reason.strip()}"
        item.updated_at = database_now(session)

        run = session.get_one(SettlementRun, run_id, with_for_update=True)
        run.failed_count -= 1
        run.voided_count += 1
        run.failed_player_ids = [pid for pid in run.failed_player_ids if pid != player_id]
        logger.warning(
            "settlement item of player %s in run %s (%s %s) voided by %s: %s",
            player_id,
            run_id,
            item.kind,
            item.period_key,
            actor,
            reason.strip(),
            extra={"ids": {"run_id": run_id, "player_id": player_id}},
        )
        return item
