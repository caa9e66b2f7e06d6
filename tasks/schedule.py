"""The beat schedule, built from the loop registry."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from health.loops import LoopSpec


def _schedule_of(spec: LoopSpec) -> Any:
    if spec.interval_seconds is not None:
        return spec.interval_seconds
    minute, hour, day_of_month, month, day_of_week = str(spec.cron).split()
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month,
        day_of_week=day_of_week,
    )


def build_beat_schedule(specs: dict[str, LoopSpec]) -> dict[str, Any]:
    """Return one beat entry per loop.

    Each entry expires: a tick that no worker took within ``expires_seconds``
    is dropped, so ticks missed while workers were down do not pile up.
    """
    schedule: dict[str, Any] = {}
    for spec in specs.values():
        options: dict[str, Any] = {"queue": spec.queue}
        if spec.expires_seconds is not None:
            options["expires"] = spec.expires_seconds
        schedule[spec.name] = {
            "task": spec.task,
            "schedule": _schedule_of(spec),
            "options": options,
        }
    return schedule
