"""Settlement run records and items: creation, final counts, reports and voiding."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, func, insert, select
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


def insert_items(
    session: Session, run_id: int, kind: str, period_key: str, planned: list[PlannedItem]
) -> dict[int, int]:
    """Insert one item per planned player; returns player id -> item id."""
    if not planned:
        return {}
    now = database_now(session)
    rows = [
        {
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
        for item in planned
    ]
    # A plain executemany, then one SELECT for the ids: INSERT ... RETURNING of many
    # rows is sent as multi-row VALUES statements that the driver parses every time.
    session.execute(insert(SettlementItem.__table__), rows)  # type: ignore[arg-type]
    query = select(SettlementItem.player_id, SettlementItem.id).where(
        SettlementItem.run_id == run_id
    )
    return {player_id: item_id for player_id, item_id in session.execute(query)}


def earlier_settled(session: Session, kind: str, period_key: str) -> dict[int, tuple[str, int]]:
    """Return player id -> (status, run id) of players credited or voided by an earlier run."""
    query = (
        select(SettlementItem.player_id, SettlementItem.status, func.max(SettlementItem.run_id))
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
