"""Loops that still run but make no progress turn readiness red, and recover.

The loops are real LoopTask tasks run in this process (``apply``), so
freshness is recorded with database timestamps exactly as in a worker. The
heartbeat is the real timer, and the verdict comes from ``python -m health``.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from app.celery_app import create_celery_app
from app.db import transaction
from app.settings import get_settings
from health.database import HealthDatabase, connect
from health.heartbeat import HeartbeatTimer
from health.loops import build_loop_specs
from health.snapshot import read_loop_records, read_workers
from outbox.enqueue import enqueue
from outbox.errors import OutboxPublishFailure
from settlement.errors import SettlementNonDelivery
from tests.conftest import point_settings_at
from tests.health import loop_tasks
from tests.health.conftest import run_health

HOST = "worker-a@test"
#: Seconds slept to let a loop's one-second freshness budget run out.
PAST_BUDGET_SECONDS = 1.2


@pytest.fixture
def set_env() -> Iterator[Callable[..., None]]:
    """Set settings variables for one test; the previous values come back afterwards."""
    saved: dict[str, str | None] = {}

    def apply(**variables: str) -> None:
        for name in variables:
            saved.setdefault(name, os.environ.get(name))
        point_settings_at(**variables)

    yield apply
    point_settings_at(**saved)


@pytest.fixture
def celery_app() -> Celery:
    return create_celery_app(get_settings())


def make_timer(database_url: str, queues: list[str]) -> HeartbeatTimer:
    settings = get_settings()
    return HeartbeatTimer(
        connect=lambda: connect(database_url, 5),
        specs=build_loop_specs(settings),
        hostname=HOST,
        pid=os.getpid(),
        queues=queues,
        interval_seconds=settings.heartbeat_interval_seconds,
        startup_grace_seconds=settings.startup_grace_seconds,
    )


def enqueue_wallet_event(aggregate_id: str) -> None:
    with transaction() as session:
        enqueue(
            session,
            "wallet",
            aggregate_type="wallet",
            aggregate_id=aggregate_id,
            event_type="wallet.credited",
            payload={"amount_minor": 500},
        )


def heartbeat_at(db: HealthDatabase) -> Any:
    return read_workers(db, HOST)[0].heartbeat_at


@pytest.mark.postgres
@pytest.mark.redis
def test_failing_publishes_turn_not_ready(
    pg_health_db: HealthDatabase,
    pg_database_url: str,
    redis_url: str,
    closed_port: int,
    set_env: Callable[..., None],
    celery_app: Celery,
) -> None:
    set_env(BROKER_URL=redis_url, OUTBOX_MAX_AGE_SECONDS="1", BROKER_TIMEOUT_SECONDS="1")
    poll = celery_app.tasks["tests.health.poll_wallet"]
    timer = make_timer(pg_database_url, ["outbox"])
    enqueue_wallet_event("w-1")
    assert poll.apply().successful()
    assert timer.tick_once().ready is True  # type: ignore[union-attr]
    ready_heartbeat_at = heartbeat_at(pg_health_db)

    set_env(BROKER_URL=f"redis://127.0.0.1:{closed_port}/0")
    enqueue_wallet_event("w-2")
    time.sleep(PAST_BUDGET_SECONDS)
    failed = poll.apply()
    readiness = timer.tick_once()
    run = run_health("check", "--worker", HOST)

    assert isinstance(failed.result, OutboxPublishFailure)
    assert readiness is not None
    assert readiness.ready is False
    assert heartbeat_at(pg_health_db) == ready_heartbeat_at
    reason = read_workers(pg_health_db, HOST)[0].not_ready_reason
    assert reason is not None
    assert reason.startswith("outbox.wallet stale: last success ")
    assert "1 consecutive failures, last: OutboxPublishFailure" in reason
    assert run.exit_code == 1
    assert run.stdout.splitlines()[-1].startswith("not ready: outbox.wallet stale")

    set_env(BROKER_URL=redis_url)
    recovered = poll.apply()
    readiness = timer.tick_once()
    run = run_health("check", "--worker", HOST)

    assert recovered.result["counts"]["published"] == 1
    assert readiness is not None
    assert readiness.ready is True
    assert heartbeat_at(pg_health_db) > ready_heartbeat_at
    assert run.exit_code == 0, run.stdout


def test_settlement_non_delivery_not_ready(
    health_db: HealthDatabase, database_url: str, celery_app: Celery
) -> None:
    settle = celery_app.tasks["tests.health.settle_rebate"]
    timer = make_timer(database_url, ["settlement"])
    loop_tasks.rebate_credits_succeed["value"] = True
    assert settle.apply().successful()
    assert timer.tick_once().ready is True  # type: ignore[union-attr]
    ready_heartbeat_at = heartbeat_at(health_db)

    loop_tasks.rebate_credits_succeed["value"] = False
    failed = settle.apply()
    # The rebate budget is a day plus the grace: move the last success two days back.
    two_days_ago = health_db.bind_time(
        health_db.now().replace(microsecond=0) - __import__("datetime").timedelta(days=2)
    )
    health_db.execute(
        "UPDATE loop_health SET last_success_at = ? WHERE loop_name = 'settlement.rebate'",
        (two_days_ago,),
    )
    readiness = timer.tick_once()
    run = run_health("check", "--json", "--worker", HOST)

    assert isinstance(failed.result, SettlementNonDelivery)
    assert readiness is not None
    assert readiness.ready is False
    assert heartbeat_at(health_db) == ready_heartbeat_at
    document = json.loads(run.stdout)
    assert run.exit_code == 1
    rebate = document["loops"][0]
    assert rebate["loop"] == "settlement.rebate"
    assert rebate["status"] == "stale"
    assert rebate["consecutive_failures"] == 1
    assert rebate["last_error"] == (
        "SettlementNonDelivery: rebate 2026-12-03: all 2 eligible credits failed"
    )

    loop_tasks.rebate_credits_succeed["value"] = True
    assert settle.apply().successful()
    readiness = timer.tick_once()
    run = run_health("check", "--worker", HOST)

    assert readiness is not None
    assert readiness.ready is True
    assert run.exit_code == 0


def test_beat_stopped_stale(
    health_db: HealthDatabase, set_env: Callable[..., None], celery_app: Celery
) -> None:
    set_env(OUTBOX_MAX_AGE_SECONDS="1")
    assert celery_app.tasks["tests.health.poll_wallet"].apply().successful()
    fresh = run_health("check", "--loop", "outbox.wallet")

    time.sleep(PAST_BUDGET_SECONDS)
    stale = run_health("check", "--loop", "outbox.wallet")

    assert fresh.exit_code == 0
    assert stale.exit_code == 1
    assert stale.stdout.splitlines()[1].split()[:2] == ["outbox.wallet", "stale"]
    assert stale.stdout.splitlines()[-1].endswith(
        "over the maximum age of 1s;"
        " no iteration started since (is beat running and the broker reachable?)"
    )


def test_unfinished_iteration_hung_while_live(
    health_db: HealthDatabase,
    database_url: str,
    set_env: Callable[..., None],
    celery_app: Celery,
) -> None:
    set_env(TASK_TIME_LIMIT_SECONDS="1", HEARTBEAT_INTERVAL_SECONDS="0.3")
    timer = make_timer(database_url, ["settlement"])
    timer.start()
    loop_tasks.release_hung_iteration.clear()
    iteration = threading.Thread(target=celery_app.tasks["tests.health.hang_rebate"].apply)
    iteration.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            record = read_loop_records(health_db, ["settlement.rebate"]).get("settlement.rebate")
            if record is not None and record.running_task_id is not None:
                break
            time.sleep(0.05)
        time.sleep(PAST_BUDGET_SECONDS)

        check = run_health("check", "--worker", HOST)
        live = run_health("live", "--worker", HOST)
    finally:
        loop_tasks.release_hung_iteration.set()
        iteration.join(timeout=10)
        timer.stop()

    assert check.exit_code == 1
    assert check.stdout.splitlines()[1].split()[:2] == ["settlement.rebate", "hung"]
    assert "has not finished within its time limit of 1s" in check.stdout.splitlines()[-1]
    assert live.exit_code == 0, live.stdout
    assert live.stdout.startswith(f"alive: worker {HOST} ticked ")


def test_rows_in_backoff_not_fresh(
    health_db: HealthDatabase, set_env: Callable[..., None], celery_app: Celery
) -> None:
    set_env(OUTBOX_MAX_AGE_SECONDS="1")
    enqueue_wallet_event("w-1")
    later = health_db.bind_time(health_db.now().replace(year=2100))
    health_db.execute("UPDATE wallet_outbox SET attempts = 1, next_attempt_at = ?", (later,))
    time.sleep(PAST_BUDGET_SECONDS)

    polled = celery_app.tasks["tests.health.poll_wallet"].apply()
    run = run_health("check", "--loop", "outbox.wallet")

    assert polled.successful()
    assert polled.result["counts"]["published"] == 0
    assert run.exit_code == 1
    assert run.stdout.splitlines()[1].split()[:2] == ["outbox.wallet", "lagging"]


@pytest.mark.postgres
def test_rows_locked_elsewhere_not_fresh(
    pg_health_db: HealthDatabase,
    pg_database_url: str,
    set_env: Callable[..., None],
    celery_app: Celery,
) -> None:
    set_env(OUTBOX_MAX_AGE_SECONDS="1")
    enqueue_wallet_event("w-1")
    holder = connect(pg_database_url, 5)
    holder.execute("BEGIN")
    holder.execute("SELECT id FROM wallet_outbox FOR UPDATE")
    try:
        time.sleep(PAST_BUDGET_SECONDS)
        polled = celery_app.tasks["tests.health.poll_wallet"].apply()
        run = run_health("check", "--json", "--loop", "outbox.wallet")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert polled.successful()
    assert polled.result["counts"]["published"] == 0
    assert run.exit_code == 1
    verdict = json.loads(run.stdout)["loops"][0]
    assert verdict["status"] == "lagging"
    assert verdict["consecutive_failures"] == 0


SKEWED_CLOCK = textwrap.dedent(
    """
    import datetime as _datetime
    import os
    import time as _time

    _SKEW_SECONDS = float(os.environ["TEST_CLOCK_SKEW_SECONDS"])
    _real_time = _time.time
    _time.time = lambda: _real_time() + _SKEW_SECONDS


    _real_datetime = _datetime.datetime


    class _AnyDatetime(type):
        # Datetimes made by C code (database drivers) are real datetimes, not this subclass.
        def __instancecheck__(cls, instance):
            return isinstance(instance, _real_datetime)


    class _SkewedDatetime(_datetime.datetime, metaclass=_AnyDatetime):
        @classmethod
        def now(cls, tz=None):
            return super().now(tz) + _datetime.timedelta(seconds=_SKEW_SECONDS)

        @classmethod
        def utcnow(cls):
            return super().utcnow() + _datetime.timedelta(seconds=_SKEW_SECONDS)


    _datetime.datetime = _SkewedDatetime
    """
)

WORKER_ON_OTHER_HOST = textwrap.dedent(
    """
    import datetime, os, time
    from health import freshness
    from health.heartbeat import HeartbeatTimer
    from health.config import load_health_config
    from health.database import connect
    from health.loops import build_loop_specs

    assert abs(time.time() - float(os.environ["TEST_REAL_TIME"])) > 3000
    for loop in ("outbox.wallet", "outbox.rolling", "outbox.agent"):
        freshness.record_success(loop, {}, "worker-skewed@other", None)
    config = load_health_config()
    timer = HeartbeatTimer(lambda: connect(config.database_url, 5),
                           build_loop_specs(config), "worker-skewed@other", os.getpid(),
                           ["outbox"], 10, 300)
    print(timer.tick_once().ready)
    """
)


def test_skewed_worker_clock_same_verdict(health_db: HealthDatabase, tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(SKEWED_CLOCK)
    skewed_env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[2]}",
        "TEST_REAL_TIME": str(time.time()),
    }

    worker = subprocess.run(
        [sys.executable, "-c", WORKER_ON_OTHER_HOST],
        env={**skewed_env, "TEST_CLOCK_SKEW_SECONDS": "-7200"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    local = run_health("check", "--json", "--worker", "worker-skewed@other")
    ahead = run_health(
        "check",
        "--json",
        "--worker",
        "worker-skewed@other",
        env={"PYTHONPATH": skewed_env["PYTHONPATH"], "TEST_CLOCK_SKEW_SECONDS": "7200"},
    )

    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.strip() == "True"
    assert local.exit_code == 0
    assert ahead.exit_code == 0, ahead.stderr
    local_loops = json.loads(local.stdout)["loops"]
    ahead_loops = json.loads(ahead.stdout)["loops"]
    assert [loop["status"] for loop in local_loops] == ["fresh"] * 3
    assert [loop["status"] for loop in ahead_loops] == ["fresh"] * 3
    for loop in local_loops + ahead_loops:
        assert loop["last_success_age_seconds"] < 60
