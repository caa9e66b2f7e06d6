"""Start-up check that the broker is reachable.

Without it, a worker started against a broker that is down keeps retrying and
logs one error per attempt, but never reports that it cannot start. Celery
5.7's defaults allow 100 attempts with waits growing from 2 s to 30 s, about
45 minutes by estimate. This check tries a few
times within a bounded time and then stops the program with one line on
stderr and EXIT_BROKER_UNAVAILABLE (69, sysexits EX_UNAVAILABLE), so the
process supervisor restarts it with its own backoff. A broker that goes away
after start-up does not stop the worker: Celery reconnects, and readiness
reports the outage.
"""

from __future__ import annotations

import logging
import sys

from kombu import Connection
from kombu.exceptions import OperationalError

from app.redaction import redact
from app.settings import Settings, mask_url

logger = logging.getLogger(__name__)

#: Exit status of worker and beat when the broker cannot be reached (sysexits EX_UNAVAILABLE).
EXIT_BROKER_UNAVAILABLE = 69
#: Connection attempts at start-up before the program gives up.
STARTUP_ATTEMPTS = 3
#: Seconds between two start-up attempts.
RETRY_INTERVAL_SECONDS = 1.0


class BrokerUnreachable(Exception):
    """The broker could not be connected to at start-up."""


def check_broker(settings: Settings) -> None:
    """Connect to the broker once, retrying up to STARTUP_ATTEMPTS times.

    Each attempt times out after BROKER_TIMEOUT_SECONDS. Raises
    BrokerUnreachable with a one-line message, password masked. The embedded
    broker needs no server and is not checked.
    """
    if settings.is_embedded:
        return
    connection = Connection(settings.broker_url, connect_timeout=settings.broker_timeout_seconds)
    try:
        connection.ensure_connection(
            max_retries=STARTUP_ATTEMPTS - 1,
            interval_start=RETRY_INTERVAL_SECONDS,
            interval_step=0,
            interval_max=RETRY_INTERVAL_SECONDS,
        )
    except (OperationalError, *connection.connection_errors) as exc:
        first_line = redact(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
        raise BrokerUnreachable(
            f"broker {mask_url(settings.broker_url)} is unreachable after"
            f" {STARTUP_ATTEMPTS} attempts: {first_line}"
        ) from None
    finally:
        connection.release()


def broker_or_exit(settings: Settings, process: str) -> None:
    """Run :func:`check_broker`; on failure print one line to stderr and exit."""
    try:
        check_broker(settings)
    except BrokerUnreachable as exc:
        print(f"{process}: cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BROKER_UNAVAILABLE) from None
    logger.info("%s: broker %s is reachable", process, mask_url(settings.broker_url))
