"""scripts/verify_failures.py end to end: each failure shows its signal and the stack recovers."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import IN_CI, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(360)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT_ROOT / "scripts" / "verify_failures.py"
#: The server the script uses; it always creates its own database there.
POSTGRES_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
#: Seconds the whole script may run; it took 30 to 45 s on the 2-core development machine.
SCRIPT_TIMEOUT_SECONDS = 240
#: Seconds the script may take to clean up after SIGTERM.
CLEANUP_TIMEOUT_SECONDS = 60

#: Every check the script runs, in order; a check that disappears fails the test.
EXPECTED_CHECKS = [
    "start: migrate",
    "start: seed data",
    "start: private redis",
    "start: settlement rebate for its last complete period",
    "start: settlement cashback for its last complete period",
    "start: settlement lossback for its last complete period",
    "start: health check exits 0",
    "start: health live exits 0",
    "start: /metrics served",
    "broker stopped: stack ready before the scenario",
    "broker stopped: broker idle with beat paused",
    "broker stopped: health check exits 1 with the outbox loops stale",
    "broker stopped: /metrics shows the outbox loops stale",
    "broker stopped: health live stays 0 (3 samples)",
    "broker stopped: worker and beat keep running",
    "broker stopped: worker log names the lost broker",
    "broker stopped: worker log says it is not ready",
    "broker stopped: beat log names the failed send",
    "broker stopped: redis restarted on the same port",
    "broker stopped: health check returns to 0",
    "broker stopped: events enqueued during the outage published",
    "wallet fails: stack ready before the scenario",
    "wallet fails: a rebate period with two payable players",
    "wallet fails: settlement run exits 1 with a partial delivery",
    "wallet fails: settlement run names SettlementPartialDelivery",
    "wallet fails: settlement report shows partial",
    "wallet fails: /metrics shows the partial run",
    "wallet fails: health check lists the failure on settlement.rebate",
    "wallet fails: settlement re-run exits 0",
    "wallet fails: settlement report shows succeeded",
    "wallet fails: the player's credit is in the ledger once",
    "wallet fails: health check exits 0 with no rebate failures",
    "beat stopped: stack ready before the scenario",
    "beat stopped: beat exits on SIGTERM",
    "beat stopped: health check exits 1 naming the outbox loops stale",
    "beat stopped: health check --worker exits 1 the same way",
    "beat stopped: worker log says it is not ready",
    "beat stopped: health live stays 0",
    "beat stopped: health check returns to 0",
    "cleanup",
]

CHECK_LINE = re.compile(r"^(PASS|FAIL) (.+?) -- ")


def require_redis_server() -> None:
    if shutil.which("redis-server") is not None:
        return
    if IN_CI:
        pytest.fail("redis-server is not on PATH; CI=true requires it", pytrace=False)
    pytest.skip("redis-server is not on PATH")


def run_script(*args: str, path: str | None = None) -> tuple[int, str]:
    """Run the script and return its exit status and stdout.

    On a timeout the script gets SIGTERM, which makes it clean up its
    processes and database before it exits.
    """
    # The script builds its processes' environment itself; it needs only PATH to find redis-server.
    env = {"PATH": path if path is not None else os.environ.get("PATH", "/usr/bin:/bin")}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=SCRIPT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.terminate()
        output, _ = process.communicate(timeout=CLEANUP_TIMEOUT_SECONDS)
        pytest.fail(f"the script ran longer than {SCRIPT_TIMEOUT_SECONDS}s:\n{output}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, output


def database_exists(name: str) -> bool:
    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.connect() as connection:
            query = text("SELECT count(*) FROM pg_database WHERE datname = :name")
            return bool(connection.execute(query, {"name": name}).scalar_one())
    finally:
        engine.dispose()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def test_verify_failures_all_checks_pass(tmp_path: Path) -> None:
    require_service("PostgreSQL", POSTGRES_ADMIN_URL)
    require_redis_server()
    logs = tmp_path / "logs"

    returncode, output = run_script("--keep-logs", str(logs))

    lines = output.splitlines()
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert failed == [], output
    assert returncode == 0, output
    checks = [match.group(2) for line in lines if (match := CHECK_LINE.match(line))]
    assert checks == EXPECTED_CHECKS
    assert lines[-1].startswith(f"all {len(EXPECTED_CHECKS)} checks passed in ")

    partial_line = next(line for line in lines if "with a partial delivery -- " in line)
    assert re.search(r" run \d+ partial: .*; failed players: \d+$", partial_line)

    database = re.search(r"INFO database (\S+) created", output)
    assert database is not None
    assert database_exists(database.group(1)) is False
    redis_port = re.search(r"redis-server on 127\.0\.0\.1:(\d+)", output)
    assert redis_port is not None
    assert port_open(int(redis_port.group(1))) is False

    worker_logs = list(logs.glob("*-worker.log"))
    assert len(worker_logs) == 1
    assert "consumer: Connection to broker lost" in worker_logs[0].read_text()
    assert len(list(logs.glob("*-beat.log"))) == 2


def test_verify_failures_without_redis_server_exits_1(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()

    returncode, output = run_script(path=str(empty_bin))

    assert returncode == 1
    assert output == ("FAIL start -- redis-server not found on PATH; install Redis 7 or newer\n")
