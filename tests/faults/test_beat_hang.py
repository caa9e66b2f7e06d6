"""Beat blocks on a broker call while its process stays up: the health check names the loops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import point_settings_at
from tests.faults.conftest import process_env
from tests.faults.faults_testing import health_check
from tests.faults.servers import (
    ManagedProcess,
    OutputLog,
    PrivateRedis,
    TcpProxy,
    celery_command,
    managed,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

OUTBOX_LOOPS = ("outbox.wallet", "outbox.rolling", "outbox.agent")
#: Freshness budget of the outbox loops in this test, in seconds.
MAX_AGE_SECONDS = 4
#: Seconds the test waits for the loops to become fresh, and then stale.
SETTLE_TIMEOUT_SECONDS = 60


@pytest.fixture
def beat_broker_proxy(private_redis: PrivateRedis) -> Any:
    proxy = TcpProxy("127.0.0.1", private_redis.port)
    yield proxy
    proxy.close()


def test_beat_blocked_on_broker_loops_go_stale(
    fault_db: str,
    private_redis: PrivateRedis,
    beat_broker_proxy: TcpProxy,
    output_log: OutputLog,
    tmp_path: Path,
) -> None:
    loop_settings = {
        "OUTBOX_POLL_INTERVAL_SECONDS": "1",
        "OUTBOX_MAX_AGE_SECONDS": str(MAX_AGE_SECONDS),
        "STARTUP_GRACE_SECONDS": "1",
        "RESULT_BACKEND": "disabled",
    }
    point_settings_at(BROKER_URL=private_redis.url(), **loop_settings)
    proxied_broker = (
        make_url(private_redis.url())
        .set(port=beat_broker_proxy.port)
        .render_as_string(hide_password=False)
    )
    worker = ManagedProcess(
        celery_command(
            "-A",
            "app",
            "worker",
            "--pool",
            "solo",
            "--queues",
            "outbox",
            "--hostname",
            "beat-hang@faults",
            "--without-gossip",
            "--without-mingle",
        ),
        process_env(**loop_settings),
        output_log.new_file("worker-beat-hang"),
    )
    beat = ManagedProcess(
        celery_command(
            "-A",
            "app",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(tmp_path / "beat-schedule"),
        ),
        process_env(BROKER_URL=proxied_broker, **loop_settings),
        output_log.new_file("beat-hang"),
    )

    with managed(worker), managed(beat):

        def loops_fresh() -> bool:
            status, document = health_check(output_log, *OUTBOX_LOOPS)
            statuses = [loop["status"] for loop in document.get("loops", [])]
            return status == 0 and statuses == ["fresh"] * len(OUTBOX_LOOPS)

        wait_until(loops_fresh, SETTLE_TIMEOUT_SECONDS, "the outbox loops to be fresh")

        beat_broker_proxy.stall()

        def loops_stale() -> dict[str, Any] | None:
            status, document = health_check(output_log, *OUTBOX_LOOPS)
            stale = [loop for loop in document.get("loops", []) if loop["status"] == "stale"]
            return document if status == 1 and len(stale) == len(OUTBOX_LOOPS) else None

        document = wait_until(loops_stale, SETTLE_TIMEOUT_SECONDS, "the outbox loops to go stale")
        assert beat.alive()
        assert worker.alive()

    assert document["ready"] is False
    for loop in document["loops"]:
        assert loop["status"] == "stale", document
        assert (
            "no iteration started since (is beat running and the broker reachable?)"
            in loop["reason"]
        )
        assert loop["consecutive_failures"] == 0
    for name in OUTBOX_LOOPS:
        assert name in document["reason"]
    assert "Sending due task" in beat.output()
