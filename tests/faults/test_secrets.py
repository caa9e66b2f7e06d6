"""No password from any URL appears in what the suite's processes and loggers wrote.

This test runs after every other fault test (see conftest.py) and searches
the output they left. That is worker, beat and CLI output, log records
formatted as the processes format them, task errors and stored row errors.
It also includes the health CLI's and HTTP server's output, metrics too.
"""

from __future__ import annotations

import urllib.request

import pytest
from sqlalchemy import text

from app.db import transaction
from outbox.errors import OutboxPublishFailure
from tests.conftest import point_settings_at
from tests.faults.conftest import POSTGRES_PASSWORD, REDIS_PASSWORD, SECRETS, process_env
from tests.faults.faults_testing import health_command, make_app
from tests.faults.servers import (
    ManagedProcess,
    OutputLog,
    celery_command,
    free_port,
    managed,
    python_module,
    run_command,
    wait_until,
)
from tests.outbox.outbox_testing import ROUTED_EVENT_TYPE, add_events

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.searches_all_output]

#: Seconds the health HTTP server may take to respond.
HTTP_TIMEOUT_SECONDS = 10


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def test_no_password_in_any_output(fault_db: str, closed_port: int, output_log: OutputLog) -> None:
    # A failing outbox run with an unreachable, password-protected broker, in this process.
    point_settings_at(
        BROKER_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed_port}/0", OUTBOX_DESTINATIONS=""
    )
    add_events("wallet", [("secret-check", ROUTED_EVENT_TYPE)])
    result = make_app().tasks["tasks.outbox.wallet"].apply()
    assert isinstance(result.result, OutboxPublishFailure)
    output_log.add_text("secrets-task-error", f"{result.result}\n{result.result.summary}")
    with transaction() as session:
        stored = session.execute(
            text("SELECT last_error_message FROM loop_health WHERE loop_name = 'outbox.wallet'")
        ).scalar_one()
    output_log.add_text("secrets-stored-error", str(stored))

    for args in (("check",), ("check", "--json"), ("live", "--json")):
        health_command(output_log, *args)

    # Start-up errors that print the URLs, masked.
    worker = celery_command("-A", "app", "worker", "--pool", "solo")
    bad_broker = f"http://user:{REDIS_PASSWORD}@127.0.0.1:{closed_port}/0"
    run_command(worker, process_env(BROKER_URL=bad_broker), output_log, "secrets-broker-scheme")
    unreachable = f"postgresql+psycopg://root:{POSTGRES_PASSWORD}@127.0.0.1:{closed_port}/x"
    run_command(worker, process_env(DATABASE_URL=unreachable), output_log, "secrets-db-closed")

    port = free_port()
    server = ManagedProcess(
        python_module("health", "serve", "--port", str(port)),
        process_env(),
        output_log.new_file("health-serve"),
    )
    with managed(server):
        base = f"http://127.0.0.1:{port}"
        metrics = wait_until(
            lambda: _try_fetch(f"{base}/metrics"), HTTP_TIMEOUT_SECONDS, "the health server"
        )
        output_log.add_text("secrets-metrics", metrics)
        output_log.add_text("secrets-readyz", fetch(f"{base}/readyz"))
        output_log.add_text("secrets-livez", fetch(f"{base}/livez"))
    assert "outbox" in metrics

    everything = output_log.all_text()

    # The search is only worth something if the URLs were printed, masked.
    assert f"BROKER_URL='http://user:***@127.0.0.1:{closed_port}/0'" in everything
    assert f"postgresql+psycopg://root:***@127.0.0.1:{closed_port}/x" in everything
    for secret in SECRETS:
        leaked = [line for line in everything.splitlines() if secret in line]
        assert leaked == [], f"{len(leaked)} lines show a password, first: {leaked[:1]}"


def _try_fetch(url: str) -> str | None:
    try:
        return fetch(url)
    except OSError:
        return None
