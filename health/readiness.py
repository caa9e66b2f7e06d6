"""Readiness: a pure function of loop records, loop specs and the database's "now".

Each loop gets one status with a reason:

* ``fresh``: the last success is within the loop's maximum age;
* ``stale``: no success within the maximum age, whether the loop fails or does
  not run at all, or no success ever once the start-up grace is over;
* ``hung``: an iteration started and has not finished within its time limit;
* ``never``: no success recorded yet, while the worker's start-up grace lasts;
* ``lagging``: an outbox loop that succeeds while its oldest publishable row is
  older than the maximum age, so it is succeeding but stuck.

``fresh`` and ``never`` count as ready; the others do not. A worker is ready
when every critical loop on the queues it consumes counts as ready.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from health.loops import LoopSpec


class LoopStatus(StrEnum):
    FRESH = "fresh"
    STALE = "stale"
    HUNG = "hung"
    NEVER = "never"
    LAGGING = "lagging"


#: Statuses under which a loop does not hold its worker back from ready.
READY_STATUSES = frozenset({LoopStatus.FRESH, LoopStatus.NEVER})


@dataclass(frozen=True)
class LoopRecord:
    """The freshness columns of one ``loop_health`` row, as aware UTC times."""

    loop_name: str
    last_started_at: datetime | None = None
    running_task_id: str | None = None
    last_finished_at: datetime | None = None
    last_success_at: datetime | None = None
    consecutive_failures: int = 0
    last_failure_at: datetime | None = None
    last_error_class: str | None = None
    last_error_message: str | None = None


@dataclass(frozen=True)
class LoopVerdict:
    loop: str
    status: LoopStatus
    reason: str
    critical: bool
    max_age_seconds: float
    last_success_age_seconds: float | None
    consecutive_failures: int
    last_error: str | None

    @property
    def ready(self) -> bool:
        return self.status in READY_STATUSES


@dataclass(frozen=True)
class Readiness:
    """The verdicts of the evaluated loops; ready when each critical loop is fresh or never."""

    now: datetime
    verdicts: list[LoopVerdict] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(verdict.ready for verdict in self.verdicts if verdict.critical)

    @property
    def reason(self) -> str | None:
        """Return why the worker is not ready, one clause per loop, or None when ready."""
        blocking = [v for v in self.verdicts if v.critical and not v.ready]
        if not blocking:
            return None
        return "; ".join(f"{v.loop} {v.status}: {v.reason}" for v in blocking)


def select_specs(
    specs: Mapping[str, LoopSpec],
    queues: Iterable[str] | None = None,
    loops: Iterable[str] | None = None,
) -> list[LoopSpec]:
    """Return the specs on ``queues`` and named in ``loops`` (each None means all).

    Raises KeyError for a name in ``loops`` that is not a declared loop.
    """
    chosen = list(specs.values())
    if loops is not None:
        names = list(loops)
        unknown = [name for name in names if name not in specs]
        if unknown:
            raise KeyError(", ".join(unknown))
        chosen = [spec for spec in chosen if spec.name in names]
    if queues is not None:
        queue_set = set(queues)
        chosen = [spec for spec in chosen if spec.queue in queue_set]
    return chosen


def evaluate(
    records: Mapping[str, LoopRecord],
    specs: Iterable[LoopSpec],
    now: datetime,
    *,
    worker_started_at: datetime | None = None,
    startup_grace_seconds: float = 0.0,
    oldest_publishable_at: Mapping[str, datetime | None] | None = None,
) -> Readiness:
    """Return the verdict of each loop in ``specs`` at ``now`` (the database clock).

    ``worker_started_at`` starts the grace during which a loop without any
    success is ``never`` rather than ``stale``: the longer of
    ``startup_grace_seconds`` and the loop's maximum age. Without it there is no grace.
    ``oldest_publishable_at`` maps an outbox stream to its oldest publishable
    row's creation time (None when it has none).
    """
    oldest = oldest_publishable_at or {}
    since_start = None if worker_started_at is None else _seconds_between(worker_started_at, now)
    verdicts = []
    for spec in specs:
        # A loop is not expected to succeed before its first budget has passed, so a
        # weekly settlement gets a week (plus grace) after start-up, not only the grace.
        grace_seconds = max(startup_grace_seconds, spec.max_age_seconds)
        in_grace = since_start is not None and since_start <= grace_seconds
        record = records.get(spec.name) or LoopRecord(loop_name=spec.name)
        stream_oldest = oldest.get(spec.outbox_stream) if spec.outbox_stream else None
        status, reason = _loop_status(record, spec, now, in_grace, stream_oldest)
        verdicts.append(
            LoopVerdict(
                loop=spec.name,
                status=status,
                reason=reason,
                critical=spec.critical,
                max_age_seconds=spec.max_age_seconds,
                last_success_age_seconds=_age(record.last_success_at, now),
                consecutive_failures=record.consecutive_failures,
                last_error=record.last_error_message,
            )
        )
    return Readiness(now=now, verdicts=verdicts)


def _loop_status(
    record: LoopRecord,
    spec: LoopSpec,
    now: datetime,
    in_grace: bool,
    oldest_publishable_at: datetime | None,
) -> tuple[LoopStatus, str]:
    hung_seconds = _running_seconds(record, now)
    if hung_seconds is not None and hung_seconds > spec.time_limit_seconds:
        return LoopStatus.HUNG, (
            f"iteration {record.running_task_id} started {hung_seconds:.0f}s ago and has not "
            f"finished within its time limit of {spec.time_limit_seconds:g}s"
        )

    if record.last_success_at is None:
        if in_grace:
            return LoopStatus.NEVER, "no success recorded yet, within the start-up grace"
        if record.last_started_at is None:
            return (
                LoopStatus.STALE,
                "no iteration has run (is beat running and the broker reachable?)",
            )
        return LoopStatus.STALE, "no success recorded" + _failure_note(record)

    success_age = _seconds_between(record.last_success_at, now)
    if success_age > spec.max_age_seconds:
        reason = (
            f"last success {success_age:.0f}s ago, over the maximum age of "
            f"{spec.max_age_seconds:g}s"
        )
        not_running = (
            record.last_started_at is None or record.last_started_at <= record.last_success_at
        )
        if record.consecutive_failures > 0:
            reason += _failure_note(record)
        elif not_running:
            reason += "; no iteration started since (is beat running and the broker reachable?)"
        return LoopStatus.STALE, reason

    if oldest_publishable_at is not None:
        row_age = _seconds_between(oldest_publishable_at, now)
        if row_age > spec.max_age_seconds:
            return LoopStatus.LAGGING, (
                f"succeeds, but the oldest publishable {spec.outbox_stream} outbox row is "
                f"{row_age:.0f}s old, over the maximum age of {spec.max_age_seconds:g}s"
            )

    return LoopStatus.FRESH, f"last success {success_age:.0f}s ago"


def _running_seconds(record: LoopRecord, now: datetime) -> float | None:
    """Return how long the unfinished iteration has run, or None when none is running."""
    if record.running_task_id is None or record.last_started_at is None:
        return None
    if record.last_finished_at is not None and record.last_finished_at >= record.last_started_at:
        return None
    return _seconds_between(record.last_started_at, now)


def _failure_note(record: LoopRecord) -> str:
    if record.consecutive_failures == 0:
        return ""
    error = record.last_error_message or record.last_error_class or "unknown error"
    return f"; {record.consecutive_failures} consecutive failures, last: {error}"


def _seconds_between(earlier: datetime, later: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else _seconds_between(moment, now)
