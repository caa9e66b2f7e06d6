"""Crediting settlement items in batches: one transaction per batch, with isolation.

Each batch goes through the wallet gateway and has its item statuses written
in the same transaction, so an item is marked credited exactly when its
ledger row commits. Transient database errors (deadlock, serialization
failure, lost connection) are retried with exponential backoff. A batch that
fails for any other reason is split in halves until each failing item is
alone in its batch. Those items become failed items that keep the error, and the rest are
credited.

Several batches may be credited at once (:func:`credit_concurrently`). They
never share a wallet, because a run has one item per player. Each batch
locks its wallets in id order, so batches of different runs do not deadlock
either.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.db import database_now, transaction
from app.logs import log_context
from app.redaction import describe_error
from settlement.ledger import Credit, CreditResult, WalletGateway
from settlement.models import SettlementItem

logger = logging.getLogger(__name__)

#: Attempts of one batch transaction when it fails with a transient database error.
CREDIT_RETRY_ATTEMPTS = 4
#: First backoff between attempts, in seconds; it doubles up to the maximum, plus a random
#: jitter of up to the first backoff.
CREDIT_RETRY_INITIAL_SECONDS = 0.05
CREDIT_RETRY_MAX_SECONDS = 2.0
#: Failed items logged one by one per run; later ones are only counted.
MAX_LOGGED_ITEM_FAILURES = 20

#: Words of a SQLite error message that mean another writer held the database.
SQLITE_TRANSIENT_MARKERS = ("database is locked", "database is busy")

T = TypeVar("T")

#: One UPDATE of a whole batch's items (PostgreSQL), in place of one UPDATE per item. The
#: rows arrive as one JSON array of arrays, which the database parses much faster than
#: the driver escapes array parameters. The time is the database clock, as database_now
#: reads it, without a round trip of its own.
_JSON_ITEM_UPDATE = text(
    "UPDATE settlement_items AS item"
    " SET status = r->>1, reason = r->>2, error = r->>3, attempts = CAST(r->>4 AS integer),"
    " updated_at = clock_timestamp()"
    " FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r"
    " WHERE item.id = CAST(r->>0 AS bigint)"
)


class GatewayResultMissing(RuntimeError):
    """The wallet gateway returned no result for a credit it was given."""


def is_transient(exc: BaseException) -> bool:
    """Return True for errors that a new attempt may not meet again.

    On PostgreSQL these are psycopg's OperationalError subclasses (deadlock,
    serialization failure, lock timeout, lost connection) and any error that
    invalidated the connection. On SQLite, whose driver raises
    OperationalError for faults such as a missing column too, only a busy or
    locked database counts.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(original, sqlite3.OperationalError):
        message = str(original).lower()
        return any(marker in message for marker in SQLITE_TRANSIENT_MARKERS)
    return isinstance(original, psycopg.OperationalError)


class BatchCrediter:
    """Credits batches of one run through ``gateway`` and records each item's outcome."""

    def __init__(
        self,
        engine: Engine,
        gateway: WalletGateway,
        *,
        run_id: int,
        retry_attempts: int = CREDIT_RETRY_ATTEMPTS,
        retry_initial_seconds: float = CREDIT_RETRY_INITIAL_SECONDS,
        retry_max_seconds: float = CREDIT_RETRY_MAX_SECONDS,
    ) -> None:
        self.engine = engine
        self.gateway = gateway
        self.run_id = run_id
        self.retry_attempts = retry_attempts
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.attempts: dict[int, int] = {}
        self.failures_logged = 0
        self.transient_retries = 0
        # Batches may be credited on several threads, which share the counters above.
        self._counters_lock = threading.Lock()

    def credit(self, credits: Sequence[Credit]) -> None:
        """Credit ``credits``, isolating failures; every item ends credited, skipped or failed.

        Raises only when the failure of an item cannot be recorded either, for
        example when the database stays unreachable.
        """
        if not credits:
            return
        try:
            self._retrying(lambda: self._credit_in_transaction(credits), credits)
        except Exception as exc:  # noqa: BLE001 - any error of one item must not stop the rest
            if is_transient(exc):
                # Retries are used up; splitting the batch would not help against
                # a database that keeps failing, so the whole batch fails.
                self._record_failed(credits, exc)
            elif len(credits) == 1:
                self._record_failed(credits, exc)
            else:
                middle = len(credits) // 2
                logger.warning(
                    "credit batch of %d items failed (%s); retrying it as two halves",
                    len(credits),
                    describe_error(exc),
                )
                self.credit(credits[:middle])
                self.credit(credits[middle:])

    def _credit_in_transaction(self, credits: Sequence[Credit]) -> None:
        for credit in credits:
            self.attempts[credit.item_id] = self.attempts.get(credit.item_id, 0) + 1

        with transaction(self.engine) as session:
            results = self.gateway.credit_batch(session, credits)
            missing = [credit.player_id for credit in credits if credit.item_id not in results]
            if missing:
                raise GatewayResultMissing(
                    f"wallet gateway returned no result for players {missing}"
                )
            self._write_results(session, credits, results)
        self._forget_attempts(credits)

        for credit in credits:
            result = results[credit.item_id]
            if result.status == "failed":
                self._log_failure(credit, result.error or "")
            elif result.status == "skipped":
                logger.info(
                    "player %s skipped: %s",
                    credit.player_id,
                    result.reason,
                    extra={"ids": {"player_id": credit.player_id}},
                )

    def _write_results(
        self, session: Session, credits: Sequence[Credit], results: dict[int, CreditResult]
    ) -> None:
        rows = []
        for credit in credits:
            result = results[credit.item_id]
            status = result.status
            reason = result.reason
            if status == "already_credited":
                status = "credited"
                reason = f"credited_earlier: {result.reason}"
            rows.append(
                (credit.item_id, status, reason, result.error, self.attempts[credit.item_id])
            )
        if session.get_bind().dialect.name == "postgresql":
            session.execute(_JSON_ITEM_UPDATE, {"rows": json.dumps(rows, separators=(",", ":"))})
            return
        now = database_now(session)
        session.execute(
            update(SettlementItem),
            [
                {
                    "id": item_id,
                    "status": status,
                    "reason": reason,
                    "error": error,
                    "attempts": attempts,
                    "updated_at": now,
                }
                for item_id, status, reason, error, attempts in rows
            ],
        )

    def _record_failed(self, credits: Sequence[Credit], exc: BaseException) -> None:
        error = describe_error(exc)
        for credit in credits:
            self._log_failure(credit, error)

        def write() -> None:
            with transaction(self.engine) as session:
                now = database_now(session)
                rows = [
                    {
                        "id": credit.item_id,
                        "status": "failed",
                        "reason": None,
                        "error": error,
                        "attempts": self.attempts.get(credit.item_id, 0),
                        "updated_at": now,
                    }
                    for credit in credits
                ]
                session.execute(update(SettlementItem), rows)

        self._retrying(write, credits)
        self._forget_attempts(credits)

    def _forget_attempts(self, credits: Sequence[Credit]) -> None:
        """Drop the attempt counts of items whose outcome is written, so memory stays flat."""
        for credit in credits:
            self.attempts.pop(credit.item_id, None)

    def _log_failure(self, credit: Credit, error: str) -> None:
        with self._counters_lock:
            self.failures_logged += 1
            failures_logged = self.failures_logged
        if failures_logged > MAX_LOGGED_ITEM_FAILURES:
            return
        suffix = " (further failures of this run are counted, not logged)"
        logger.error(
            "credit of player %s failed: %s%s",
            credit.player_id,
            error,
            suffix if failures_logged == MAX_LOGGED_ITEM_FAILURES else "",
            extra={"ids": {"player_id": credit.player_id}},
        )

    def _retrying(self, action: Callable[[], T], credits: Sequence[Credit]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            with self._counters_lock:
                self.transient_retries += 1
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "transient database error on a batch of %d items (players %s..%s),"
                " attempt %d of %d, retrying in %.2fs: %s",
                len(credits),
                credits[0].player_id,
                credits[-1].player_id,
                state.attempt_number,
                self.retry_attempts,
                wait,
                describe_error(error) if error else "unknown error",
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.retry_attempts),
            wait=wait_exponential_jitter(
                multiplier=self.retry_initial_seconds,
                jitter=self.retry_initial_seconds,
                max=self.retry_max_seconds,
            ),
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        with log_context(run_id=self.run_id):
            result: Any = retrying(action)
        return result


def credit_concurrently(
    crediter: BatchCrediter, batches: Iterable[Sequence[Credit]], workers: int
) -> None:
    """Credit ``batches`` with up to ``workers`` batches in flight, each on its own connection.

    While one batch waits for the database, another is prepared in Python,
    and the database works on two batches at once. At most ``workers``
    batches are held at a time, so memory stays flat. The first error that
    :meth:`BatchCrediter.credit` raises stops new batches; it is raised once
    the batches in flight have finished.
    """
    if workers <= 1:
        for credits in batches:
            crediter.credit(credits)
        return

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="settlement-credit") as pool:
        in_flight: set[Future[None]] = set()
        try:
            for credits in batches:
                if len(in_flight) >= workers:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                # A copy of the log context, so the batch's log lines carry the run's ids.
                context = contextvars.copy_context()
                in_flight.add(pool.submit(context.run, crediter.credit, credits))
        finally:
            finished, _ = wait(in_flight)
        for future in finished:
            future.result()
