"""The worker heartbeat: evaluate readiness on each tick and write the worker's row.

Every tick moves ``ticked_at`` (the liveness signal). ``heartbeat_at`` moves
only while the worker is ready; while it is not, the tick records
``not_ready_reason`` and leaves ``heartbeat_at`` as it was. All times are the
database's "now".

:class:`HeartbeatTimer` runs the ticks on its own daemon thread. It does not
import Celery; :mod:`health.bootstep` starts and stops it with the worker.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from health.database import HealthDatabase, probe_errors
from health.loops import LoopSpec
from health.readiness import Readiness, evaluate, select_specs
from health.snapshot import read_loop_records, read_oldest_publishable, read_workers

logger = logging.getLogger(__name__)

STATUS_READY = "ready"
STATUS_NOT_READY = "not_ready"
STATUS_STOPPED = "stopped"

#: Reason stored between a worker's start and its first evaluation.
STARTING_REASON = "starting: readiness not evaluated yet"


def register_worker(db: HealthDatabase, hostname: str, pid: int, queues: Sequence[str]) -> datetime:
    """Insert or reset ``hostname``'s row for a starting worker; return its start time."""
    now = db.now()
    bound_now = db.bind_time(now)
    json_mark = db.json_parameter()
    db.execute(
        "INSERT INTO worker_heartbeats "  # noqa: S608
        "(hostname, pid, status, queues, started_at, ticked_at, heartbeat_at, "
        "not_ready_reason, stopped_at) "
        f"VALUES (?, ?, ?, {json_mark}, ?, ?, NULL, ?, NULL) "
        "ON CONFLICT (hostname) DO UPDATE SET pid = excluded.pid, status = excluded.status, "
        "queues = excluded.queues, started_at = excluded.started_at, "
        "ticked_at = excluded.ticked_at, not_ready_reason = excluded.not_ready_reason, "
        "stopped_at = NULL",
        (
            hostname,
            pid,
            STATUS_NOT_READY,
            json.dumps(sorted(queues)),
            bound_now,
            bound_now,
            STARTING_REASON,
        ),
    )
    return now


def tick(
    db: HealthDatabase,
    specs: Mapping[str, LoopSpec],
    hostname: str,
    queues: Sequence[str],
    worker_started_at: datetime,
    startup_grace_seconds: float,
) -> Readiness:
    """Evaluate the critical loops on ``queues`` and write the result to the worker's row."""
    chosen = select_specs(specs, queues=queues)
    now = db.now()
    records = read_loop_records(db, [spec.name for spec in chosen])
    streams = [spec.outbox_stream for spec in chosen if spec.outbox_stream]
    readiness = evaluate(
        records,
        chosen,
        now,
        worker_started_at=worker_started_at,
        startup_grace_seconds=startup_grace_seconds,
        oldest_publishable_at=read_oldest_publishable(db, streams),
    )

    bound_now = db.bind_time(now)
    if readiness.ready:
        db.execute(
            "UPDATE worker_heartbeats SET ticked_at = ?, heartbeat_at = ?, status = ?, "
            "not_ready_reason = NULL WHERE hostname = ?",
            (bound_now, bound_now, STATUS_READY, hostname),
        )
    else:
        db.execute(
            "UPDATE worker_heartbeats SET ticked_at = ?, status = ?, not_ready_reason = ? "
            "WHERE hostname = ?",
            (bound_now, STATUS_NOT_READY, readiness.reason, hostname),
        )
    return readiness


def mark_stopped(db: HealthDatabase, hostname: str) -> None:
    """Mark ``hostname``'s row stopped, so liveness and readiness stop counting on it."""
    now = db.bind_time(db.now())
    db.execute(
        "UPDATE worker_heartbeats SET status = ?, stopped_at = ?, ticked_at = ?, "
        "not_ready_reason = ? WHERE hostname = ?",
        (STATUS_STOPPED, now, now, "worker stopped", hostname),
    )


def worker_row_exists(db: HealthDatabase, hostname: str) -> bool:
    return bool(read_workers(db, hostname))


class HeartbeatTimer:
    """Ticks every ``interval_seconds`` on a daemon thread until stopped.

    The thread does not depend on the broker connection, so it keeps ticking
    while Celery's consumer reconnects. :meth:`rearm` starts a new thread if the
    previous one died, and requests an immediate tick.
    """

    def __init__(
        self,
        connect: Callable[[], HealthDatabase],
        specs: Mapping[str, LoopSpec],
        hostname: str,
        pid: int,
        queues: Sequence[str],
        interval_seconds: float,
        startup_grace_seconds: float,
    ) -> None:
        self.connect = connect
        self.specs = specs
        self.hostname = hostname
        self.pid = pid
        self.queues = list(queues)
        self.interval_seconds = interval_seconds
        self.startup_grace_seconds = startup_grace_seconds
        self.started_at: datetime | None = None
        self.last_readiness: Readiness | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self.rearm()

    def rearm(self) -> None:
        """Make sure the ticking thread runs, and tick now."""
        with self._lock:
            if self._stopping.is_set():
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"health-heartbeat-{self.hostname}", daemon=True
                )
                self._thread.start()
                logger.info(
                    "heartbeat timer of worker %s started: every %ss, queues %s",
                    self.hostname,
                    f"{self.interval_seconds:g}",
                    ", ".join(self.queues),
                )
        self._wake.set()

    def stop(self) -> None:
        """Stop ticking and mark the worker's row stopped."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval_seconds + 5)
        try:
            with self.connect() as db:
                mark_stopped(db, self.hostname)
            logger.info("worker %s marked stopped", self.hostname)
        except probe_errors(OSError) as exc:
            logger.error("marking worker %s stopped failed: %s", self.hostname, exc)

    def tick_once(self) -> Readiness | None:
        """Run one tick; a database error is logged and returns None."""
        try:
            with self.connect() as db:
                if self.started_at is None or not worker_row_exists(db, self.hostname):
                    self.started_at = register_worker(db, self.hostname, self.pid, self.queues)
                readiness = tick(
                    db,
                    self.specs,
                    self.hostname,
                    self.queues,
                    self.started_at,
                    self.startup_grace_seconds,
                )
        except probe_errors(OSError) as exc:
            logger.error("heartbeat tick of worker %s failed: %s", self.hostname, exc)
            return None
        self._log_change(readiness)
        self.last_readiness = readiness
        return readiness

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.tick_once()
            self._wake.wait(self.interval_seconds)
            self._wake.clear()

    def _log_change(self, readiness: Readiness) -> None:
        previous = self.last_readiness
        if previous is not None and previous.ready == readiness.ready:
            return
        if readiness.ready:
            logger.info("worker %s is ready", self.hostname)
        else:
            logger.warning("worker %s is not ready: %s", self.hostname, readiness.reason)
