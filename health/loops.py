"""The registry of critical loops: each declared once with its schedule and freshness budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


class LoopSettings(Protocol):
    """The settings a loop budget is built from.

    Both :class:`app.settings.Settings` and the lighter
    :class:`health.config.HealthConfig` provide them, so the health CLI can build
    the registry without importing pydantic.
    """

    @property
    def outbox_poll_interval_seconds(self) -> float: ...
    @property
    def outbox_max_age_seconds(self) -> float: ...
    @property
    def settlement_grace_seconds(self) -> float: ...
    @property
    def task_time_limit_seconds(self) -> float: ...
    @property
    def lossback_period(self) -> Literal["daily", "weekly"]: ...


DAY_SECONDS = 86_400
WEEK_SECONDS = 7 * DAY_SECONDS

OUTBOX_STREAMS = ("wallet", "rolling", "agent")
SETTLEMENT_KINDS = ("rebate", "cashback", "lossback")

OUTBOX_QUEUE = "outbox"
SETTLEMENT_QUEUE = "settlement"


@dataclass(frozen=True)
class LoopSpec:
    """One critical loop.

    Exactly one of ``interval_seconds`` and ``cron`` is set. ``cron`` has the five
    crontab fields (minute hour day-of-month month day-of-week) in the business
    time zone. ``max_age_seconds`` is the freshness budget: the longest time since
    the last success for which the loop still counts as fresh.
    """

    name: str
    task: str
    queue: str
    max_age_seconds: float
    time_limit_seconds: float
    interval_seconds: float | None = None
    cron: str | None = None
    critical: bool = True
    #: Seconds after which a scheduled message that no worker took is dropped.
    expires_seconds: float | None = None
    #: Outbox stream the loop drains, whose oldest publishable row must stay within budget.
    outbox_stream: str | None = None

    @property
    def schedule_text(self) -> str:
        if self.interval_seconds is not None:
            return f"every {self.interval_seconds:g}s"
        return f"cron '{self.cron}'"


#: Crontab of each settlement kind: shortly after its period ends in the business time zone.
SETTLEMENT_CRON = {
    "rebate": "30 0 * * *",
    "cashback": "0 1 * * 1",
    "lossback_daily": "0 2 * * *",
    "lossback_weekly": "0 2 * * 1",
}


def settlement_period_seconds(kind: str, settings: LoopSettings) -> int:
    if kind == "rebate":
        return DAY_SECONDS
    if kind == "cashback":
        return WEEK_SECONDS
    return DAY_SECONDS if settings.lossback_period == "daily" else WEEK_SECONDS


def _settlement_cron(kind: str, settings: LoopSettings) -> str:
    if kind == "lossback":
        return SETTLEMENT_CRON[f"lossback_{settings.lossback_period}"]
    return SETTLEMENT_CRON[kind]


def build_loop_specs(settings: LoopSettings) -> dict[str, LoopSpec]:
    """Return every critical loop by name, with budgets taken from ``settings``."""
    specs: dict[str, LoopSpec] = {}
    for stream in OUTBOX_STREAMS:
        name = f"outbox.{stream}"
        specs[name] = LoopSpec(
            name=name,
            task=f"tasks.outbox.{stream}",
            queue=OUTBOX_QUEUE,
            interval_seconds=settings.outbox_poll_interval_seconds,
            max_age_seconds=settings.outbox_max_age_seconds,
            time_limit_seconds=settings.task_time_limit_seconds,
            expires_seconds=settings.outbox_poll_interval_seconds,
            outbox_stream=stream,
        )
    for kind in SETTLEMENT_KINDS:
        name = f"settlement.{kind}"
        # A settlement succeeds once per period, so its budget is the period plus a grace.
        period_seconds = settlement_period_seconds(kind, settings)
        specs[name] = LoopSpec(
            name=name,
            task=f"tasks.settlement.{kind}",
            queue=SETTLEMENT_QUEUE,
            cron=_settlement_cron(kind, settings),
            max_age_seconds=period_seconds + settings.settlement_grace_seconds,
            time_limit_seconds=settings.task_time_limit_seconds,
            expires_seconds=settings.settlement_grace_seconds,
        )
    return specs
