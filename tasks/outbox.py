"""Celery tasks of the outbox pollers: one per stream, each a thin call into outbox.poller."""

from __future__ import annotations

from celery import shared_task

from app.loop_task import LoopTask
from outbox.outcome import OutboxOutcome
from outbox.poller import drain_stream


@shared_task(base=LoopTask, bind=True, name="tasks.outbox.wallet", loop_name="outbox.wallet")
def wallet(self: LoopTask) -> OutboxOutcome:
    """Publish the wallet outbox; raises OutboxPublishFailure when a row failed or was parked."""
    return drain_stream("wallet")


@shared_task(base=LoopTask, bind=True, name="tasks.outbox.rolling", loop_name="outbox.rolling")
def rolling(self: LoopTask) -> OutboxOutcome:
    """Publish the rolling outbox; raises OutboxPublishFailure when a row failed or was parked."""
    return drain_stream("rolling")


@shared_task(base=LoopTask, bind=True, name="tasks.outbox.agent", loop_name="outbox.agent")
def agent(self: LoopTask) -> OutboxOutcome:
    """Publish the agent outbox; raises OutboxPublishFailure when a row failed or was parked."""
    return drain_stream("agent")


#: Task of each stream, for callers that pick a stream by name (the outbox CLI).
OUTBOX_TASKS = {"wallet": wallet, "rolling": rolling, "agent": agent}
