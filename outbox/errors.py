"""Outbox exceptions."""

from __future__ import annotations

from app.outcome import IterationFailure


class InvalidOutboxEvent(ValueError):
    """An event rejected by enqueue before anything was written; ``field`` names the bad input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid outbox event: {field}: {message}")
        self.field = field


class OutboxPublishFailure(IterationFailure):
    """A poll iteration in which at least one row failed or was parked.

    Raised after the rows that were published are committed; ``summary`` has the counts.
    """
