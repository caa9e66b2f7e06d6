"""The readiness and liveness probes behind ``python -m health`` and its HTTP server.

Neither imports Celery, SQLAlchemy or pydantic, so a probe costs little more
than the database driver's import and one connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from health.config import HealthConfig
from health.database import HealthDatabase, connect
from health.loops import build_loop_specs
from health.readiness import Readiness, evaluate, select_specs
from health.snapshot import WorkerRow, read_loop_records, read_oldest_publishable, read_workers

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNKNOWN = 2

#: Heartbeat intervals a worker may miss before it counts as not alive.
LIVENESS_MISSED_TICKS = 3
STATUS_STOPPED = "stopped"


class ProbeUnknown(Exception):
    """The probe cannot tell: bad input or an unreadable database; the message names the cause."""


@dataclass(frozen=True)
class CheckResult:
    readiness: Readiness
    worker: WorkerRow | None
    worker_reason: str | None

    @property
    def ready(self) -> bool:
        return self.worker_reason is None and self.readiness.ready

    @property
    def reason(self) -> str | None:
        return self.worker_reason or self.readiness.reason


@dataclass(frozen=True)
class LiveResult:
    alive: bool
    reason: str
    worker: WorkerRow | None
    now: datetime


def check_readiness(
    db: HealthDatabase,
    config: HealthConfig,
    loops: Sequence[str] | None = None,
    worker: str | None = None,
) -> CheckResult:
    """Evaluate the critical loops; with ``worker``, those on its queues and since its start.

    Without ``worker`` every loop is evaluated, and the start-up grace runs from
    the most recent start among workers that are not stopped.
    Raises ProbeUnknown for an unknown loop or worker name.
    """
    specs = build_loop_specs(config)
    workers = read_workers(db, worker)
    if worker is not None and not workers:
        raise ProbeUnknown(
            f"worker {worker} has no heartbeat row: it has not started, or the name is wrong"
        )

    worker_row = workers[0] if worker is not None else None
    queues = worker_row.queues if worker_row is not None else None
    try:
        chosen = select_specs(specs, queues=queues, loops=loops)
    except KeyError as exc:
        raise ProbeUnknown(
            f"unknown loop {exc.args[0]}: expected one of {', '.join(specs)}"
        ) from None

    running = [row for row in workers if row.status != STATUS_STOPPED]
    started_at = max((row.started_at for row in running), default=None)

    now = db.now()
    streams = [spec.outbox_stream for spec in chosen if spec.outbox_stream]
    readiness = evaluate(
        read_loop_records(db, [spec.name for spec in chosen]),
        chosen,
        now,
        worker_started_at=started_at,
        startup_grace_seconds=config.startup_grace_seconds,
        oldest_publishable_at=read_oldest_publishable(db, streams),
    )

    worker_reason = None
    if worker_row is not None and worker_row.status == STATUS_STOPPED:
        worker_reason = f"worker {worker_row.hostname} stopped"
    return CheckResult(readiness=readiness, worker=worker_row, worker_reason=worker_reason)


def check_liveness(
    db: HealthDatabase, config: HealthConfig, worker: str | None = None
) -> LiveResult:
    """Return whether the worker's heartbeat timer ticked recently and it is not stopped.

    Without ``worker``, the most recently ticked worker is checked.
    """
    now = db.now()
    workers = read_workers(db, worker)
    if not workers:
        name = f"worker {worker}" if worker else "any worker"
        return LiveResult(False, f"no heartbeat row for {name}", None, now)

    row = workers[0]
    max_tick_age = LIVENESS_MISSED_TICKS * config.heartbeat_interval_seconds
    tick_age = max(0.0, (now - row.ticked_at).total_seconds())
    if row.status == STATUS_STOPPED:
        return LiveResult(False, f"worker {row.hostname} stopped", row, now)
    if tick_age > max_tick_age:
        return LiveResult(
            False,
            f"worker {row.hostname} last ticked {tick_age:.0f}s ago, over {max_tick_age:g}s",
            row,
            now,
        )
    return LiveResult(True, f"worker {row.hostname} ticked {tick_age:.0f}s ago", row, now)


def open_database(config: HealthConfig, timeout_seconds: float) -> HealthDatabase:
    return connect(config.database_url, timeout_seconds)
