"""A settlement run: plan the items of a period, credit them in batches, record the outcome.

The steps of :func:`run_settlement`:

1. resolve the period (the last complete one when none is given);
2. take the run lock of the kind and period (:mod:`settlement.locking`);
3. write the run record, then, in one transaction, compute every eligible
   player's item from SQL aggregates while they are read and insert the
   items in chunks, so no step keeps every player in memory;
4. credit the pending items in batches of ``SETTLEMENT_BATCH_SIZE``, read
   back from the items table in item id order;
5. count the items in the database, decide the status and write the run
   record, which happens even when a step above raised.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.db import database_now, get_engine, transaction
from app.logs import log_context
from app.redaction import describe_error
from app.settings import Settings, get_settings
from settlement.calculation import Calculation, PlayerActivity
from settlement.cashback import calculate_cashback
from settlement.crediting import BatchCrediter, credit_concurrently
from settlement.eligibility import iter_activity
from settlement.errors import InvalidTerms
from settlement.ledger import (
    Credit,
    LedgerGateway,
    WalletGateway,
    idempotency_key,
    wallet_rejection,
)
from settlement.locking import RUN_LOCK_WAIT_SECONDS, run_lock
from settlement.lossback import calculate_lossback
from settlement.models import Wallet
from settlement.outcome import SettlementOutcome
from settlement.periods import Period, resolve_period
from settlement.rebate import calculate_rebate
from settlement.records import (
    CREDITED_EARLIER,
    PlannedItem,
    close_abandoned_runs,
    count_pending,
    create_run,
    earlier_settled,
    finish_run,
    insert_items,
    insert_items_overlapped,
    iter_pending_items,
    pending_items,
    record_abort,
)
from settlement.terms import Terms, load_terms

logger = logging.getLogger(__name__)

Calculator = Callable[[PlayerActivity, Terms], Calculation]

CALCULATORS: dict[str, Calculator] = {
    "rebate": calculate_rebate,
    "cashback": calculate_cashback,
    "lossback": calculate_lossback,
}

#: Player status that can receive settlement credits.
ACTIVE_PLAYER_STATUS = "active"


@dataclass(frozen=True)
class SettlementPlan:
    """The items a run of ``kind`` over ``period`` would create."""

    kind: str
    period: Period
    items: list[PlannedItem]


def _calculator(kind: str) -> Calculator:
    try:
        return CALCULATORS[kind]
    except KeyError:
        raise ValueError(
            f"unknown settlement kind {kind!r}: expected one of {', '.join(CALCULATORS)}"
        ) from None


def plan_items(session: Session, kind: str, period: Period) -> list[PlannedItem]:
    """Return the planned items of :func:`iter_planned_items` as a list (the dry run)."""
    return list(iter_planned_items(session, kind, period))


def iter_planned_items(session: Session, kind: str, period: Period) -> Iterator[PlannedItem]:
    """Yield one planned item per player with a settled bet in ``period``, by player id.

    Players that an earlier run credited or voided are carried over with that
    status. Missing terms and inactive players are skipped with a reason.
    Invalid terms make failed items, because those players are owed a credit
    that the terms cannot compute.
    """
    calculate = _calculator(kind)
    terms_by_currency = load_terms(session, kind)
    settled = earlier_settled(session, kind, period.key)
    warned_currencies: set[str] = set()

    for activity in iter_activity(session, period):
        key = idempotency_key(kind, period.key, activity.player_id)
        earlier = settled.get(activity.player_id)
        terms = terms_by_currency.get(activity.currency)

        if earlier is not None:
            status, run_id = earlier
            if status == "credited":
                reason = f"{CREDITED_EARLIER}: credited by run {run_id}"
            else:
                reason = f"voided in run {run_id}"
            yield _unpaid(activity, key, status, reason=reason)
        elif activity.status != ACTIVE_PLAYER_STATUS:
            reason = f"player_inactive: player status is {activity.status}"
            yield _unpaid(activity, key, "skipped", reason=reason)
        elif terms is None:
            if activity.currency not in warned_currencies:
                logger.warning("no active %s terms for currency %s", kind, activity.currency)
                warned_currencies.add(activity.currency)
            reason = f"no_terms: no active {kind} terms for {activity.currency}"
            yield _unpaid(activity, key, "skipped", reason=reason)
        elif isinstance(terms, InvalidTerms):
            yield _unpaid(activity, key, "failed", error=str(terms))
        else:
            yield _planned_from_calculation(activity, key, calculate, terms)


def _unpaid(
    activity: PlayerActivity,
    key: str,
    status: str,
    *,
    reason: str | None = None,
    error: str | None = None,
) -> PlannedItem:
    return PlannedItem(
        player_id=activity.player_id,
        currency=activity.currency,
        basis_minor=0,
        amount_minor=0,
        status=status,
        idempotency_key=key,
        reason=reason,
        error=error,
    )


def _planned_from_calculation(
    activity: PlayerActivity, key: str, calculate: Calculator, terms: Terms
) -> PlannedItem:
    try:
        calculation = calculate(activity, terms)
    except InvalidTerms as exc:
        return _unpaid(activity, key, "failed", error=str(exc))
    return PlannedItem(
        player_id=activity.player_id,
        currency=activity.currency,
        basis_minor=calculation.basis_minor,
        amount_minor=calculation.amount_minor,
        status="skipped" if calculation.skip_reason else "pending",
        idempotency_key=key,
        reason=calculation.skip_reason,
        details=calculation.details,
    )


def resolve_run_period(
    kind: str,
    period_text: str | None,
    engine: Engine | None = None,
    settings: Settings | None = None,
) -> Period:
    """Return the period a run of ``kind`` would settle, by the database clock.

    Raises InvalidPeriod for a malformed period or one that has not ended.
    """
    engine = engine or get_engine()
    settings = settings or get_settings()
    _calculator(kind)
    with transaction(engine) as session:
        now = database_now(session)
    return resolve_period(
        kind,
        period_text,
        now=now,
        zone=settings.timezone,
        lossback_period=settings.lossback_period,
    )


def plan_settlement(
    kind: str,
    period_text: str | None = None,
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
) -> SettlementPlan:
    """Compute what a run would credit, without writing anything (the dry run)."""
    settings = settings or get_settings()
    engine = engine or get_engine()
    period = resolve_run_period(kind, period_text, engine, settings)
    with Session(engine) as session:
        items = _with_wallet_checks(session, plan_items(session, kind, period))
        session.rollback()
    return SettlementPlan(kind, period, items)


def _with_wallet_checks(session: Session, items: list[PlannedItem]) -> list[PlannedItem]:
    """Apply the gateway's wallet checks to pending items, as crediting would.

    The dry run shows a closed or suspended wallet as skipped, and a missing
    wallet or another currency as failed, with the same reasons as a real run.
    """
    pending = [item.player_id for item in items if item.status == "pending"]
    wallets = {
        wallet.player_id: wallet
        for wallet in session.scalars(select(Wallet).where(Wallet.player_id.in_(pending)))
    }
    checked = []
    for item in items:
        rejection = None
        if item.status == "pending":
            rejection = wallet_rejection(item.player_id, item.currency, wallets.get(item.player_id))
        if rejection is None:
            checked.append(item)
        else:
            checked.append(
                replace(
                    item, status=rejection.status, reason=rejection.reason, error=rejection.error
                )
            )
    return checked


def run_settlement(
    kind: str,
    period_text: str | None = None,
    *,
    gateway: WalletGateway | None = None,
    engine: Engine | None = None,
    settings: Settings | None = None,
    task_id: str | None = None,
    hostname: str | None = None,
    lock_wait_seconds: float = RUN_LOCK_WAIT_SECONDS,
) -> SettlementOutcome:
    """Settle ``kind`` for a period and return the outcome; the run record is always written.

    ``gateway`` defaults to :class:`~settlement.ledger.LedgerGateway`. Raises
    InvalidPeriod for a bad period, SettlementRunBusy when another run of the
    period holds the lock too long, and SettlementNonDelivery when the run
    aborts after its record was created. A returned outcome with failures is
    turned into its exception by the caller (the base task does it).
    """
    settings = settings or get_settings()
    engine = engine or get_engine()
    gateway = gateway or LedgerGateway()
    hostname = hostname or socket.gethostname()
    period = resolve_run_period(kind, period_text, engine, settings)

    with (
        log_context(loop=f"settlement.{kind}"),
        run_lock(engine, kind, period.key, lock_wait_seconds),
    ):
        if engine.dialect.name == "postgresql":
            # The run lock is held, so a record of this period still marked running
            # belongs to a process that died or lost the database mid-run. SQLite
            # has no run lock, so there such a record may be a live run.
            close_abandoned_runs(engine, kind, period.key)
        run_id = create_run(engine, kind, period, task_id, hostname)
        with log_context(run_id=run_id):
            logger.info(
                "settlement %s %s started (%s to %s)",
                kind,
                period.key,
                period.start.isoformat(),
                period.end.isoformat(),
            )
            eligible = 0
            try:
                eligible = _settle(engine, gateway, kind, period, run_id, settings)
                outcome = finish_run(engine, run_id, eligible)
            except Exception as exc:
                error = describe_error(exc)
                logger.exception(
                    "settlement %s %s run %s aborted: %s", kind, period.key, run_id, error
                )
                outcome = _abort(engine, run_id, kind, period, eligible, error)
                raise outcome.failure() from exc
            _log_outcome(outcome)
            return outcome


def _settle(
    engine: Engine,
    gateway: WalletGateway,
    kind: str,
    period: Period,
    run_id: int,
    settings: Settings,
) -> int:
    """Create the run's items and credit the pending ones; returns the eligible count.

    Items are inserted while the activity is read, in chunks, and credited from
    the items table in batches by item id, so memory does not grow with the
    number of players.
    """
    batch_size = settings.settlement_batch_size
    workers = settings.settlement_credit_workers if engine.dialect.name == "postgresql" else 1
    eligible = _insert_planned_items(engine, run_id, kind, period)
    with transaction(engine) as session:
        pending = count_pending(session, run_id)
    logger.info(
        "settlement %s %s: %d eligible players, %d credits to make in batches of %d, %d at a time",
        kind,
        period.key,
        eligible,
        pending,
        batch_size,
        workers,
    )

    crediter = BatchCrediter(engine, gateway, run_id=run_id)
    batches = _pending_credit_batches(engine, run_id, kind, period.key, batch_size)
    with closing(batches):
        credit_concurrently(crediter, batches, workers)
    return eligible


def _insert_planned_items(engine: Engine, run_id: int, kind: str, period: Period) -> int:
    """Plan the run's items and insert them in one transaction; returns how many.

    On PostgreSQL the activity is read in a transaction of its own, and a
    second thread inserts each chunk while the next is computed. SQLite reads
    and inserts in turn on one connection.
    """
    if engine.dialect.name != "postgresql":
        with transaction(engine) as session:
            planned = iter_planned_items(session, kind, period)
            return insert_items(session, run_id, kind, period.key, planned)

    with Session(engine) as reader, reader.begin(), transaction(engine) as writer:
        planned = iter_planned_items(reader, kind, period)
        return insert_items_overlapped(writer, run_id, kind, period.key, planned)


def _pending_credit_batches(
    engine: Engine, run_id: int, kind: str, period_key: str, batch_size: int
) -> Generator[list[Credit], None, None]:
    """Yield the credits of the run's pending items in batches of ``batch_size``, by item id.

    On PostgreSQL one query reads them through a server-side cursor, in a
    read-only transaction of its own that stays open while the batches are
    credited. Its snapshot was taken after the items were committed, and the
    crediting transactions only change items it has already listed. On SQLite
    an open reader would block the crediting writers, so each batch is a
    short query for the next ids instead.
    """
    if engine.dialect.name == "postgresql":
        # Closing the session ends the read-only transaction; it is not committed, and
        # when the database was lost the pool discards the connection without raising.
        with Session(engine) as session:
            for rows in iter_pending_items(session, run_id, batch_size):
                yield _credits(rows, run_id, kind, period_key)
        return

    after_id = 0
    while True:
        with transaction(engine) as session:
            rows = pending_items(session, run_id, after_id, batch_size)
        if not rows:
            return
        yield _credits(rows, run_id, kind, period_key)
        after_id = rows[-1][0]


def _credits(
    rows: Sequence[tuple[int, int, str, int, str]], run_id: int, kind: str, period_key: str
) -> list[Credit]:
    return [
        Credit(
            item_id=item_id,
            run_id=run_id,
            kind=kind,
            period_key=period_key,
            player_id=player_id,
            currency=currency,
            amount_minor=amount_minor,
            idempotency_key=key,
        )
        for item_id, player_id, currency, amount_minor, key in rows
    ]


def _abort(
    engine: Engine, run_id: int, kind: str, period: Period, eligible: int, error: str
) -> SettlementOutcome:
    try:
        return finish_run(engine, run_id, eligible, error=error)
    except Exception as exc:  # noqa: BLE001 - the run's own error is raised by the caller
        logger.error("counting the items of aborted run %s failed: %s", run_id, describe_error(exc))
        record_abort(engine, run_id, error)
        return SettlementOutcome(
            loop=f"settlement.{kind}",
            counts={"eligible": eligible},
            details={"run_id": run_id, "kind": kind, "period_key": period.key, "error": error},
            status="failed",
        )


def _log_outcome(outcome: SettlementOutcome) -> None:
    if outcome.ok:
        logger.info("%s", outcome.describe())
    else:
        logger.error("%s", outcome.describe())
