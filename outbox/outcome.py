"""The outcome of one outbox poller run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from app.outcome import IterationOutcome
from outbox.errors import OutboxPublishFailure

#: Names of the counts an outbox run keeps; each starts at zero so the summary lists all.
OUTBOX_COUNT_NAMES = ("published", "failed", "deferred", "parked", "broker_unavailable")


@dataclass
class OutboxOutcome(IterationOutcome):
    """Counts of published, failed, deferred and parked rows of one run, and the first errors.

    ``deferred`` rows were not sent: a row of the same aggregate failed before
    them, or the batch's publish deadline passed. They stay publishable and are
    not a failure. ``broker_unavailable`` is 1 when the broker could not be
    reached, in which case no row was claimed.
    """

    failure_counts: ClassVar[tuple[str, ...]] = ("failed", "parked", "broker_unavailable")

    def __post_init__(self) -> None:
        for name in OUTBOX_COUNT_NAMES:
            self.counts.setdefault(name, 0)

    def failure(self) -> OutboxPublishFailure:
        """Return the exception raised after a run in which a row failed or was parked."""
        message = f"{self.describe()}: not every publishable row was delivered"
        return OutboxPublishFailure(message, self.summary())
