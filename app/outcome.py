"""Iteration outcomes and the failure they turn into.

A loop body returns an :class:`IterationOutcome`; the base task
(:mod:`app.loop_task`) is the one place that turns it into success or failure.
This module does not import Celery, so domain code can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

#: Errors kept in an outcome summary; later ones are only counted.
MAX_ERRORS_IN_SUMMARY = 5


class IterationFailure(Exception):
    """An iteration that did not deliver all of its work.

    ``args`` are ``(message, summary)`` so the exception survives Celery's JSON
    result serialisation and can be rebuilt by a client.
    """

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message, summary or {})
        self.summary: dict[str, Any] = summary or {}

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class IterationOutcome:
    """Counts of what one iteration did, and the first few errors.

    Subclasses name the counts that mean failure in ``failure_counts`` and the
    exception raised for them in :meth:`failure`.
    """

    loop: str
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    failure_counts: ClassVar[tuple[str, ...]] = ("failed",)

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def add_error(self, ident: str, error: str) -> None:
        """Keep ``error`` for ``ident`` if fewer than MAX_ERRORS_IN_SUMMARY are kept."""
        if len(self.errors) < MAX_ERRORS_IN_SUMMARY:
            self.errors.append({"id": ident, "error": error})

    @property
    def failed_count(self) -> int:
        return sum(self.counts.get(name, 0) for name in self.failure_counts)

    @property
    def ok(self) -> bool:
        return self.failed_count == 0

    def summary(self) -> dict[str, Any]:
        """Return a JSON-serialisable description: loop, ok, counts, errors and details."""
        return {
            "loop": self.loop,
            "ok": self.ok,
            "counts": dict(self.counts),
            "errors": list(self.errors),
            **self.details,
        }

    def describe(self) -> str:
        counts = ", ".join(f"{name}={value}" for name, value in sorted(self.counts.items()))
        return f"{self.loop}: {counts or 'nothing to do'}"

    def failure(self) -> IterationFailure:
        """Return the exception that reports this outcome's failures."""
        return IterationFailure(f"{self.describe()} ({self.failed_count} failed)", self.summary())
