"""One settlement run per kind and period at a time.

On PostgreSQL a run holds a session-level advisory lock keyed by kind and
period on a connection of its own, so a second run waits for it. SQLite
takes its database write lock for every transaction (``BEGIN IMMEDIATE``),
which serialises the batches of concurrent runs, though not whole runs.
On both, the ledger's unique idempotency key is what makes a second credit
of the same player impossible. The lock only keeps runs from doing
duplicate work.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from settlement.errors import SettlementRunBusy

logger = logging.getLogger(__name__)

#: Seconds a run waits for another run of the same kind and period before it gives up.
RUN_LOCK_WAIT_SECONDS = 300.0
#: Seconds between attempts to take a held lock.
RUN_LOCK_POLL_SECONDS = 0.2


def run_lock_key(kind: str, period_key: str) -> int:
    """Return the signed 64-bit advisory lock key of a kind and period."""
    digest = hashlib.blake2b(f"settlement:{kind}:{period_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def run_lock(
    engine: Engine, kind: str, period_key: str, wait_seconds: float = RUN_LOCK_WAIT_SECONDS
) -> Iterator[None]:
    """Hold the run lock of ``kind`` and ``period_key`` inside the block.

    Raises SettlementRunBusy when another run holds it for more than
    ``wait_seconds``. On SQLite the block runs without a lock.
    """
    if engine.dialect.name != "postgresql":
        yield
        return

    key = run_lock_key(kind, period_key)
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + wait_seconds
        logged_wait = False
        while not connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
        ).scalar():
            if time.monotonic() >= deadline:
                raise SettlementRunBusy(
                    f"settlement {kind} {period_key} is already being run by another process;"
                    f" gave up after waiting {wait_seconds:g}s. Check `python -m settlement"
                    f" report --kind {kind} --period {period_key}` and retry when it has finished",
                    {"kind": kind, "period_key": period_key, "status": "busy"},
                )
            if not logged_wait:
                logger.warning(
                    "settlement %s %s is being run by another process; waiting up to %gs",
                    kind,
                    period_key,
                    wait_seconds,
                )
                logged_wait = True
            time.sleep(RUN_LOCK_POLL_SECONDS)

        try:
            yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except SQLAlchemyError as exc:
                # A pooled connection must not keep the lock: drop the connection,
                # and with it the database session that holds the lock.
                logger.error("releasing the run lock of %s %s failed: %s", kind, period_key, exc)
                connection.invalidate()
    finally:
        connection.close()
