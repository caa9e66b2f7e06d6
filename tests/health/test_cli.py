"""``python -m health check`` and ``live`` as a subprocess: output and exit status."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from health import freshness
from health.database import HealthDatabase
from health.heartbeat import mark_stopped, register_worker
from tests.health.conftest import run_health

ALL_LOOPS = [
    "outbox.wallet",
    "outbox.rolling",
    "outbox.agent",
    "settlement.rebate",
    "settlement.cashback",
    "settlement.lossback",
]


def record_all_successes() -> None:
    for loop in ALL_LOOPS:
        freshness.record_success(loop, {"ok": True}, "worker-a@test", None)


def test_check_all_fresh_exits_0(health_db: HealthDatabase) -> None:
    record_all_successes()

    run = run_health("check")

    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == [
        "LOOP",
        "STATUS",
        "LAST",
        "SUCCESS",
        "MAX",
        "AGE",
        "FAILURES",
        "LAST",
        "ERROR",
    ]
    assert [line.split()[0] for line in lines[1:7]] == ALL_LOOPS
    assert [line.split()[1] for line in lines[1:7]] == ["fresh"] * 6
    assert lines[-1] == "ready"


def test_check_json_lists_loops(health_db: HealthDatabase) -> None:
    record_all_successes()
    freshness.record_failure("outbox.agent", RuntimeError("broker refused"), None, None)

    run = run_health("check", "--json", "--loop", "outbox.agent", "--loop", "outbox.wallet")

    document = json.loads(run.stdout)
    assert run.exit_code == 0
    assert document["ready"] is True
    assert document["reason"] is None
    assert [loop["loop"] for loop in document["loops"]] == ["outbox.wallet", "outbox.agent"]
    agent = document["loops"][1]
    assert agent["status"] == "fresh"
    assert agent["consecutive_failures"] == 1
    assert agent["last_error"] == "RuntimeError: broker refused"
    assert agent["max_age_seconds"] == 120.0


def test_check_stale_loop_exits_1(health_db: HealthDatabase) -> None:
    record_all_successes()
    health_db.execute(
        "UPDATE loop_health SET last_success_at = ? WHERE loop_name = 'outbox.rolling'",
        (health_db.bind_time(health_db.now().replace(year=2020)),),
    )

    run = run_health("check")

    assert run.exit_code == 1
    assert run.stdout.splitlines()[-1].startswith("not ready: outbox.rolling stale: last success")


def test_check_worker_uses_its_queues(health_db: HealthDatabase) -> None:
    register_worker(health_db, "worker-s@test", 1, ["settlement"])
    for kind in ("rebate", "cashback", "lossback"):
        freshness.record_success(f"settlement.{kind}", {}, "worker-s@test", None)

    run = run_health("check", "--json", "--worker", "worker-s@test")

    document = json.loads(run.stdout)
    assert run.exit_code == 0, run.stderr
    assert document["worker"] == {
        "hostname": "worker-s@test",
        "status": "not_ready",
        "queues": ["settlement"],
    }
    assert [loop["loop"] for loop in document["loops"]] == ALL_LOOPS[3:]


def test_check_worker_in_grace_never(health_db: HealthDatabase) -> None:
    register_worker(health_db, "worker-o@test", 1, ["outbox"])

    run = run_health("check", "--json", "--worker", "worker-o@test")

    document = json.loads(run.stdout)
    assert run.exit_code == 0
    assert [loop["status"] for loop in document["loops"]] == ["never"] * 3


def test_check_stopped_worker_exits_1(health_db: HealthDatabase) -> None:
    register_worker(health_db, "worker-o@test", 1, ["outbox"])
    mark_stopped(health_db, "worker-o@test")

    run = run_health("check", "--worker", "worker-o@test")

    assert run.exit_code == 1
    assert run.stdout.splitlines()[-1] == "not ready: worker worker-o@test stopped"


def test_check_unknown_worker_exits_2(health_db: HealthDatabase) -> None:
    run = run_health("check", "--worker", "nobody@test")

    assert run.exit_code == 2
    assert run.stderr.strip() == (
        "health: cannot tell: worker nobody@test has no heartbeat row: "
        "it has not started, or the name is wrong"
    )


def test_check_unknown_loop_exits_2(health_db: HealthDatabase) -> None:
    run = run_health("check", "--loop", "outbox.nope")

    assert run.exit_code == 2
    assert run.stderr.startswith("health: cannot tell: unknown loop outbox.nope: expected one of")


def test_check_database_unreachable_exits_2(closed_port: int) -> None:
    url = f"postgresql+psycopg://svc:hunter2@127.0.0.1:{closed_port}/settlement"

    run = run_health("check", "--timeout", "3", env={"DATABASE_URL": url})

    assert run.exit_code == 2
    assert run.wall_seconds < 3
    assert run.stdout == ""
    assert len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith("health: cannot tell: database unreachable: connection failed")
    assert "Connection refused" in run.stderr
    assert "hunter2" not in run.stderr


def test_check_missing_sqlite_file_exits_2(tmp_path: Path) -> None:
    run = run_health("check", env={"DATABASE_URL": f"sqlite:///{tmp_path}/absent.sqlite"})

    assert run.exit_code == 2
    assert run.stderr.strip() == (
        f"health: cannot tell: database unreachable: SQLite file {tmp_path}/absent.sqlite "
        "does not exist"
    )


def test_check_unmigrated_database_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty.sqlite").write_bytes(b"")

    run = run_health("check", env={"DATABASE_URL": f"sqlite:///{tmp_path}/empty.sqlite"})

    assert run.exit_code == 2
    assert run.stderr.strip() == (
        "health: cannot tell: database query failed (are migrations applied?): "
        "no such table: worker_heartbeats"
    )


def test_check_bad_configuration_exits_2() -> None:
    run = run_health("check", env={"OUTBOX_MAX_AGE_SECONDS": "soon"})

    assert run.exit_code == 2
    assert run.stderr.strip() == (
        "health: cannot tell: configuration error: OUTBOX_MAX_AGE_SECONDS='soon' is invalid: "
        "expected a number of seconds greater than 0"
    )


@pytest.mark.postgres
def test_check_blocked_query_times_out(pg_health_db: HealthDatabase, pg_database_url: str) -> None:
    from health.database import connect

    blocker = connect(pg_database_url, 5)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE worker_heartbeats IN ACCESS EXCLUSIVE MODE")
    try:
        run = run_health("check", "--timeout", "1")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert run.exit_code == 2
    assert run.wall_seconds < 3
    assert run.stderr.strip() == "health: cannot tell: check timed out after 1s"


def test_live_recent_tick_exits_0(health_db: HealthDatabase) -> None:
    register_worker(health_db, "worker-a@test", 1, ["outbox"])

    run = run_health("live", "--worker", "worker-a@test")

    assert run.exit_code == 0
    assert run.stdout.startswith("alive: worker worker-a@test ticked ")


def test_live_old_tick_exits_1(health_db: HealthDatabase) -> None:
    register_worker(health_db, "worker-a@test", 1, ["outbox"])
    old = health_db.bind_time(health_db.now().replace(year=2020))
    health_db.execute("UPDATE worker_heartbeats SET ticked_at = ?", (old,))

    run = run_health("live")

    assert run.exit_code == 1
    assert run.stdout.startswith("not alive: worker worker-a@test last ticked ")
    assert run.stdout.strip().endswith("s ago, over 30s")


def test_live_stopped_worker_exits_1(health_db: HealthDatabase) -> None:
    register_worker(health_db, "worker-a@test", 1, ["outbox"])
    mark_stopped(health_db, "worker-a@test")

    run = run_health("live", "--json")

    assert run.exit_code == 1
    assert json.loads(run.stdout)["reason"] == "worker worker-a@test stopped"


def test_live_no_worker_exits_1(health_db: HealthDatabase) -> None:
    run = run_health("live")

    assert run.exit_code == 1
    assert run.stdout.strip() == "not alive: no heartbeat row for any worker"


def test_check_runs_without_celery_sqlalchemy_pydantic(health_db: HealthDatabase) -> None:
    record_all_successes()
    code = (
        "import sys, runpy; sys.argv = ['health', 'check']\n"
        "try:\n    runpy.run_module('health', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('celery', 'sqlalchemy', 'pydantic', 'kombu') "
        "if m in sys.modules))\n"
    )
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=30
    )

    assert completed.stdout.splitlines()[-1] == "[]"


def test_check_concurrent_runs_agree(health_db: HealthDatabase) -> None:
    record_all_successes()
    codes: list[int] = []

    def check() -> None:
        codes.append(run_health("check").exit_code)

    threads = [threading.Thread(target=check) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert codes == [0, 0, 0]
