"""The heartbeat tick: ticked_at always, heartbeat_at only while ready, stopped at the end."""

from __future__ import annotations

import time
from datetime import datetime

from health import freshness
from health.config import load_health_config
from health.database import HealthDatabase, connect, to_utc
from health.heartbeat import (
    STARTING_REASON,
    HeartbeatTimer,
    mark_stopped,
    register_worker,
    tick,
)
from health.loops import build_loop_specs
from health.snapshot import read_workers

SPECS = build_loop_specs(load_health_config({}))
HOST = "worker-a@test"


def heartbeat_row(db: HealthDatabase) -> tuple[str, datetime, datetime | None, str | None]:
    row = read_workers(db, HOST)[0]
    return row.status, row.ticked_at, row.heartbeat_at, row.not_ready_reason


def test_register_worker_row_starting(health_db: HealthDatabase) -> None:
    started_at = register_worker(health_db, HOST, 4242, ["settlement", "outbox"])

    row = read_workers(health_db, HOST)[0]
    assert row.pid == 4242
    assert row.queues == ["outbox", "settlement"]
    assert row.started_at == started_at
    assert row.ticked_at == started_at
    assert row.heartbeat_at is None
    assert row.status == "not_ready"
    assert row.not_ready_reason == STARTING_REASON


def test_tick_ready_refreshes_heartbeat(health_db: HealthDatabase) -> None:
    started_at = register_worker(health_db, HOST, 1, ["settlement"])
    for kind in ("rebate", "cashback", "lossback"):
        freshness.record_success(f"settlement.{kind}", {}, HOST, None)

    readiness = tick(health_db, SPECS, HOST, ["settlement"], started_at, 300)

    status, ticked_at, heartbeat_at, reason = heartbeat_row(health_db)
    assert readiness.ready is True
    assert status == "ready"
    assert heartbeat_at == ticked_at
    assert ticked_at > started_at
    assert reason is None


def test_tick_not_ready_keeps_heartbeat(health_db: HealthDatabase) -> None:
    started_at = register_worker(health_db, HOST, 1, ["settlement"])
    for kind in ("rebate", "cashback", "lossback"):
        freshness.record_success(f"settlement.{kind}", {}, HOST, None)
    tick(health_db, SPECS, HOST, ["settlement"], started_at, 300)
    _, _, ready_heartbeat_at, _ = heartbeat_row(health_db)
    health_db.execute(
        "UPDATE loop_health SET last_success_at = ? WHERE loop_name = 'settlement.rebate'",
        (health_db.bind_time(started_at.replace(year=2020)),),
    )
    # SQLite's clock has millisecond resolution; the second tick must get a later time.
    time.sleep(0.002)

    readiness = tick(health_db, SPECS, HOST, ["settlement"], started_at, 300)

    status, ticked_at, heartbeat_at, reason = heartbeat_row(health_db)
    assert readiness.ready is False
    assert status == "not_ready"
    assert heartbeat_at == ready_heartbeat_at
    assert ticked_at > ready_heartbeat_at  # type: ignore[operator]
    assert reason is not None
    assert reason.startswith("settlement.rebate stale: last success ")


def test_tick_only_loops_on_worker_queues(health_db: HealthDatabase) -> None:
    started_at = register_worker(health_db, HOST, 1, ["outbox"])
    for stream in ("wallet", "rolling", "agent"):
        freshness.record_success(f"outbox.{stream}", {}, HOST, None)

    readiness = tick(health_db, SPECS, HOST, ["outbox"], started_at, 300)

    assert readiness.ready is True
    assert [v.loop for v in readiness.verdicts] == [
        "outbox.wallet",
        "outbox.rolling",
        "outbox.agent",
    ]


def test_mark_stopped_sets_status(health_db: HealthDatabase) -> None:
    register_worker(health_db, HOST, 1, ["outbox"])

    mark_stopped(health_db, HOST)

    row = read_workers(health_db, HOST)[0]
    assert row.status == "stopped"
    assert row.stopped_at is not None
    assert row.not_ready_reason == "worker stopped"


def test_register_after_stop_clears_stopped(health_db: HealthDatabase) -> None:
    register_worker(health_db, HOST, 1, ["outbox"])
    mark_stopped(health_db, HOST)

    register_worker(health_db, HOST, 2, ["outbox"])

    row = read_workers(health_db, HOST)[0]
    assert row.status == "not_ready"
    assert row.stopped_at is None
    assert row.pid == 2


def test_sqlalchemy_reads_heartbeat_times(health_db: HealthDatabase) -> None:
    from sqlalchemy import select

    from app.db import transaction
    from health.models import WorkerHeartbeat

    started_at = register_worker(health_db, HOST, 1, ["outbox"])

    with transaction() as session:
        row = session.scalar(select(WorkerHeartbeat).where(WorkerHeartbeat.hostname == HOST))
    assert row is not None
    assert to_utc(row.started_at) == started_at
    assert row.queues == ["outbox"]


def test_timer_rearm_restarts_dead_thread(database_url: str) -> None:
    timer = HeartbeatTimer(
        connect=lambda: connect(database_url, 5),
        specs=SPECS,
        hostname=HOST,
        pid=1,
        queues=["outbox"],
        interval_seconds=3600,
        startup_grace_seconds=300,
    )
    timer.start()
    first_thread = timer._thread
    timer._stopping.set()
    timer._wake.set()
    assert first_thread is not None
    first_thread.join(timeout=10)
    timer._stopping.clear()

    timer.rearm()

    assert timer._thread is not first_thread
    assert timer._thread is not None
    assert timer._thread.is_alive() is True
    timer.stop()
    with connect(database_url, 5) as db:
        assert read_workers(db, HOST)[0].status == "stopped"


def test_timer_ticks_repeatedly(database_url: str) -> None:
    timer = HeartbeatTimer(
        connect=lambda: connect(database_url, 5),
        specs=SPECS,
        hostname=HOST,
        pid=1,
        queues=["outbox"],
        interval_seconds=0.05,
        startup_grace_seconds=300,
    )
    timer.start()
    with connect(database_url, 5) as db:
        deadline = time.monotonic() + 10
        while not read_workers(db, HOST) and time.monotonic() < deadline:
            time.sleep(0.05)
        first_tick = read_workers(db, HOST)[0].ticked_at
        while read_workers(db, HOST)[0].ticked_at == first_tick and time.monotonic() < deadline:
            time.sleep(0.05)
        second_tick = read_workers(db, HOST)[0].ticked_at
    timer.stop()

    assert second_tick > first_tick
    assert timer.last_readiness is not None
    assert timer.last_readiness.ready is True
