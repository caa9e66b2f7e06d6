"""Celery tasks of the settlements: one per kind, each a thin call into settlement.runner.

Each takes an optional ``period`` keyword: an ISO date such as 2026-12-03, or
an ISO week such as 2026-W49 for weekly kinds. Without it the last complete
period is settled, which is how beat calls them.
"""

from __future__ import annotations

from celery import shared_task

from app.loop_task import LoopTask
from settlement.outcome import SettlementOutcome
from settlement.runner import run_settlement


def _settle(task: LoopTask, kind: str, period: str | None) -> SettlementOutcome:
    return run_settlement(kind, period, task_id=task.request.id, hostname=task.request.hostname)


@shared_task(
    base=LoopTask, bind=True, name="tasks.settlement.rebate", loop_name="settlement.rebate"
)
def rebate(self: LoopTask, period: str | None = None) -> SettlementOutcome:
    """Settle the daily rebate; raises SettlementNonDelivery when a credit failed."""
    return _settle(self, "rebate", period)


@shared_task(
    base=LoopTask, bind=True, name="tasks.settlement.cashback", loop_name="settlement.cashback"
)
def cashback(self: LoopTask, period: str | None = None) -> SettlementOutcome:
    """Settle the weekly cashback; raises SettlementNonDelivery when a credit failed."""
    return _settle(self, "cashback", period)


@shared_task(
    base=LoopTask, bind=True, name="tasks.settlement.lossback", loop_name="settlement.lossback"
)
def lossback(self: LoopTask, period: str | None = None) -> SettlementOutcome:
    """Settle lossback for its configured period; raises SettlementNonDelivery when one failed."""
    return _settle(self, "lossback", period)


#: Task of each kind, for callers that pick a kind by name (the settlement CLI).
SETTLEMENT_TASKS = {"rebate": rebate, "cashback": cashback, "lossback": lossback}
