"""Plain-SQL reads of the health tables: loop records, outbox lag, worker rows.

Every time is read from the database, including "now", so a probe on a host
with a skewed clock reaches the same verdict as one on the database host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from health.database import HealthDatabase, from_json, to_utc
from health.readiness import LoopRecord

#: Rows a poller may still publish; the same condition as outbox.models.PUBLISHABLE_WHERE.
PUBLISHABLE_WHERE = "published_at IS NULL AND parked_at IS NULL"
#: Parked rows an operator has not discarded yet.
PARKED_WHERE = "parked_at IS NOT NULL AND discarded_at IS NULL"

_LOOP_COLUMNS = (
    "loop_name, last_started_at, running_task_id, last_finished_at, last_success_at, "
    "consecutive_failures, last_failure_at, last_error_class, last_error_message"
)
_WORKER_COLUMNS = (
    "hostname, pid, status, queues, started_at, ticked_at, heartbeat_at, "
    "not_ready_reason, stopped_at"
)


@dataclass(frozen=True)
class OutboxLag:
    """Backlog of one outbox stream."""

    stream: str
    publishable_rows: int
    oldest_publishable_at: datetime | None
    parked_rows: int


@dataclass(frozen=True)
class WorkerRow:
    hostname: str
    pid: int
    status: str
    queues: list[str]
    started_at: datetime
    ticked_at: datetime
    heartbeat_at: datetime | None
    not_ready_reason: str | None
    stopped_at: datetime | None


def outbox_table(stream: str) -> str:
    """Return the table name of ``stream``; only known stream names reach SQL."""
    if not stream.isidentifier():
        raise ValueError(f"invalid outbox stream name {stream!r}")
    return f"{stream}_outbox"


def read_loop_records(db: HealthDatabase, loops: Iterable[str]) -> dict[str, LoopRecord]:
    names = list(loops)
    if not names:
        return {}
    marks = ", ".join("?" for _ in names)
    rows = db.fetch_all(
        f"SELECT {_LOOP_COLUMNS} FROM loop_health WHERE loop_name IN ({marks})",  # noqa: S608
        names,
    )
    records = {}
    for row in rows:
        records[row[0]] = LoopRecord(
            loop_name=row[0],
            last_started_at=to_utc(row[1]),
            running_task_id=row[2],
            last_finished_at=to_utc(row[3]),
            last_success_at=to_utc(row[4]),
            consecutive_failures=int(row[5] or 0),
            last_failure_at=to_utc(row[6]),
            last_error_class=row[7],
            last_error_message=row[8],
        )
    return records


def read_oldest_publishable(
    db: HealthDatabase, streams: Iterable[str]
) -> dict[str, datetime | None]:
    """Return each stream's oldest publishable row time; a cheap query for readiness."""
    oldest = {}
    for stream in streams:
        table = outbox_table(stream)
        rows = db.fetch_all(
            f"SELECT min(created_at) FROM {table} WHERE {PUBLISHABLE_WHERE}"  # noqa: S608
        )
        oldest[stream] = to_utc(rows[0][0])
    return oldest


def read_outbox_lag(db: HealthDatabase, streams: Iterable[str]) -> dict[str, OutboxLag]:
    """Return backlog, oldest publishable time and parked rows of each stream, for metrics."""
    lags = {}
    for stream in streams:
        table = outbox_table(stream)
        publishable = db.fetch_all(
            f"SELECT count(*), min(created_at) FROM {table} WHERE {PUBLISHABLE_WHERE}"  # noqa: S608
        )[0]
        parked = db.fetch_all(f"SELECT count(*) FROM {table} WHERE {PARKED_WHERE}")[0]  # noqa: S608
        lags[stream] = OutboxLag(
            stream=stream,
            publishable_rows=int(publishable[0]),
            oldest_publishable_at=to_utc(publishable[1]),
            parked_rows=int(parked[0]),
        )
    return lags


def read_workers(db: HealthDatabase, hostname: str | None = None) -> list[WorkerRow]:
    """Return worker rows, most recently ticked first; only ``hostname``'s if given."""
    sql = f"SELECT {_WORKER_COLUMNS} FROM worker_heartbeats"  # noqa: S608
    params: list[str] = []
    if hostname is not None:
        sql += " WHERE hostname = ?"
        params.append(hostname)
    workers = [_worker_row(row) for row in db.fetch_all(sql, params)]
    workers.sort(key=lambda worker: worker.ticked_at, reverse=True)
    return workers


def _worker_row(row: tuple[object, ...]) -> WorkerRow:
    started_at = to_utc(row[4])
    ticked_at = to_utc(row[5])
    if started_at is None or ticked_at is None:
        raise ValueError(f"worker row {row[0]!r} has no start or tick time")
    return WorkerRow(
        hostname=str(row[0]),
        pid=int(str(row[1])),
        status=str(row[2]),
        queues=[str(queue) for queue in from_json(row[3])],
        started_at=started_at,
        ticked_at=ticked_at,
        heartbeat_at=to_utc(row[6]),
        not_ready_reason=None if row[7] is None else str(row[7]),
        stopped_at=to_utc(row[8]),
    )
