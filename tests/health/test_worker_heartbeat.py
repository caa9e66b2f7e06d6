"""A real ``celery -A app worker`` with the heartbeat bootstep and a private Redis broker.

The broker is a redis-server started by the test, so the test can stop it:
liveness must stay green while the broker is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from health.database import HealthDatabase
from health.snapshot import WorkerRow, read_workers
from tests.health.conftest import PROJECT_ROOT, run_health

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

WORKER = "heartbeat@test"
#: Seconds a worker or broker may take to start or stop.
START_STOP_SECONDS = 60
HEARTBEAT_ENV = {"HEARTBEAT_INTERVAL_SECONDS": "0.5"}


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"redis-server did not listen on port {port}")


def wait_for_row(db: HealthDatabase, condition: object, seconds: float) -> WorkerRow | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = read_workers(db, WORKER)
        if rows and condition(rows[0]):  # type: ignore[operator]
            return rows[0]
        time.sleep(0.1)
    return None


@pytest.fixture
def broker_port(
    closed_port: int, tmp_path: Path
) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    servers = [start_redis(closed_port, tmp_path)]
    yield closed_port, servers
    for server in servers:
        server.kill()
        server.wait()


def test_worker_heartbeat_survives_broker_outage(
    pg_health_db: HealthDatabase,
    pg_database_url: str,
    broker_port: tuple[int, list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    port, servers = broker_port
    env = {
        **os.environ,
        **HEARTBEAT_ENV,
        "DATABASE_URL": pg_database_url,
        "BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "RESULT_BACKEND": "disabled",
        "VAR_DIR": str(tmp_path),
    }
    celery = str(Path(os.sys.executable).parent / "celery")  # type: ignore[attr-defined]
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [
            celery,
            "-A",
            "app",
            "worker",
            "-Q",
            "outbox",
            "-n",
            WORKER,
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        first = wait_for_row(pg_health_db, lambda row: row.status != "stopped", START_STOP_SECONDS)
        assert first is not None, (tmp_path / "worker.log").read_text()
        assert first.queues == ["outbox"]
        assert run_health("live", "--worker", WORKER, env=HEARTBEAT_ENV).exit_code == 0

        servers[0].kill()
        servers[0].wait()
        outage_started = read_workers(pg_health_db, WORKER)[0].ticked_at
        time.sleep(3)
        during_outage = read_workers(pg_health_db, WORKER)[0]
        live_during_outage = run_health("live", "--worker", WORKER, env=HEARTBEAT_ENV)

        servers.append(start_redis(port, tmp_path))
        time.sleep(2)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=START_STOP_SECONDS)
        stopped = read_workers(pg_health_db, WORKER)[0]
        live_after_stop = run_health("live", "--worker", WORKER, env=HEARTBEAT_ENV)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()

    assert during_outage.ticked_at > outage_started
    assert during_outage.status != "stopped"
    assert live_during_outage.exit_code == 0, live_during_outage.stdout
    assert stopped.status == "stopped"
    assert stopped.stopped_at is not None
    assert live_after_stop.exit_code == 1
    assert live_after_stop.stdout.strip() == f"not alive: worker {WORKER} stopped"
