"""Loop tasks for health tests, built on LoopTask so they record freshness like real loops."""

from __future__ import annotations

import threading
from typing import Any

from celery import shared_task

from app.loop_task import LoopTask
from app.outcome import IterationOutcome
from outbox.poller import drain_stream
from settlement.errors import SettlementNonDelivery

#: Set by a test to let the blocked iteration of ``hang_rebate`` finish.
release_hung_iteration = threading.Event()
#: Whether ``settle_rebate`` credits every player (True) or every credit fails (False).
rebate_credits_succeed = {"value": True}


@shared_task(base=LoopTask, bind=True, name="tests.health.poll_wallet", loop_name="outbox.wallet")
def poll_wallet(self: Any) -> IterationOutcome:
    """Drain the wallet outbox with the real poller and the broker of BROKER_URL."""
    return drain_stream("wallet")


@shared_task(
    base=LoopTask, bind=True, name="tests.health.settle_rebate", loop_name="settlement.rebate"
)
def settle_rebate(self: Any) -> IterationOutcome:
    """Settle two players; every credit fails while ``rebate_credits_succeed`` is False."""
    outcome = IterationOutcome(loop="settlement.rebate", counts={"eligible": 2})
    if rebate_credits_succeed["value"]:
        outcome.add("credited", 2)
        return outcome
    summary = {"eligible": 2, "credited": 0, "failed": 2, "failed_player_ids": [1, 2]}
    raise SettlementNonDelivery("rebate 2026-12-03: all 2 eligible credits failed", summary)


@shared_task(
    base=LoopTask, bind=True, name="tests.health.hang_rebate", loop_name="settlement.rebate"
)
def hang_rebate(self: Any) -> IterationOutcome:
    """Block until the test sets ``release_hung_iteration``: an iteration that does not finish."""
    release_hung_iteration.wait()
    return IterationOutcome(loop="settlement.rebate")
