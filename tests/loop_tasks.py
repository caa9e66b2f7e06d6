"""Loop tasks used by the tests of the base task; registered on every app via shared_task."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.loop_task import LoopTask
from app.outcome import IterationOutcome


class DeliveryBroken(RuntimeError):
    pass


@shared_task(base=LoopTask, bind=True, name="tests.loop.report")
def report_counts(self: Any, done: int = 0, failed: int = 0) -> IterationOutcome:
    """Return an outcome with the given counts, as a loop body that never raises."""
    outcome = IterationOutcome(loop=self.loop, counts={"done": done, "failed": failed})
    for index in range(failed):
        outcome.add_error(f"item-{index}", "delivery refused")
    return outcome


@shared_task(base=LoopTask, bind=True, name="tests.loop.raise")
def raise_error(self: Any) -> IterationOutcome:
    raise DeliveryBroken("broker refused the message for postgresql://svc:hunter2@db/x")


@shared_task(base=LoopTask, bind=True, name="tests.loop.swallow")
def swallow_error(self: Any) -> IterationOutcome:
    """Catch its own exception and return a failed outcome, as a careless body would."""
    outcome = IterationOutcome(loop=self.loop)
    try:
        raise DeliveryBroken("connection reset")
    except DeliveryBroken as exc:
        outcome.add("failed")
        outcome.add_error("item-0", str(exc))
    return outcome


@shared_task(base=LoopTask, bind=True, name="tests.loop.no_outcome")
def return_nothing(self: Any) -> None:
    return None
