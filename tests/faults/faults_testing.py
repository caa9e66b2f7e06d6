"""Helpers of the fault tests: broker contents, outbox rows and the health CLI."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from typing import Any

import redis
from celery import Celery
from sqlalchemy import func, select

from app.celery_app import create_celery_app
from app.db import transaction
from app.settings import get_settings
from outbox.poller import outbox_table
from tests.faults.conftest import process_env
from tests.faults.servers import (
    ManagedProcess,
    OutputLog,
    celery_command,
    python_module,
    run_command,
    wait_until,
)

#: Queue that a stream's events go to when OUTBOX_DESTINATIONS is empty.
WALLET_QUEUE = "outbox.wallet.events"


def make_app() -> Celery:
    import tasks.outbox
    import tasks.settlement  # noqa: F401

    app = create_celery_app(get_settings())
    app.set_current()
    return app


def queued_event_ids(client: redis.Redis, queue: str = WALLET_QUEUE) -> list[uuid.UUID]:
    """Return the message id (the event id) of every message stored in a Redis queue."""
    ids = []
    for stored in client.lrange(queue, 0, -1):
        message = json.loads(stored)
        ids.append(uuid.UUID(message["properties"]["message_id"]))
    return ids


def duplicates(ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Return each id seen more than once, with how many times."""
    return {event_id: count for event_id, count in Counter(ids).items() if count > 1}


def outbox_rows(stream: str = "wallet") -> list[Any]:
    table = outbox_table(stream)
    with transaction() as session:
        return list(session.execute(select(table).order_by(table.c.id)))


def unpublished_count(stream: str = "wallet") -> int:
    table = outbox_table(stream)
    with transaction() as session:
        query = select(func.count()).select_from(table).where(table.c.published_at.is_(None))
        return int(session.execute(query).scalar_one())


def health_command(
    output_log: OutputLog, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m health ARGS`` against the current settings' database."""
    return run_command(
        python_module("health", *args), process_env(**env), output_log, "health-" + args[0]
    )


def health_check(output_log: OutputLog, *loops: str, **env: str) -> tuple[int, dict[str, Any]]:
    """Run ``python -m health check --json`` for ``loops``; return the exit status and document."""
    args = ["check", "--json"]
    for loop in loops:
        args += ["--loop", loop]
    result = health_command(output_log, *args, **env)
    document = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, document


#: Seconds a fault test waits for a worker it started to report ready.
WORKER_READY_TIMEOUT_SECONDS = 45


def start_worker(
    output_log: OutputLog, hostname: str, queues: str = "outbox", **env: str
) -> ManagedProcess:
    """Start ``celery worker`` (solo pool) on the fault app and wait until it consumes."""
    worker = ManagedProcess(
        celery_command(
            "-A",
            "tests.faults.fault_worker",
            "worker",
            "--pool",
            "solo",
            "--queues",
            queues,
            "--hostname",
            hostname,
            "--without-gossip",
            "--without-mingle",
        ),
        process_env(RESULT_BACKEND="disabled", **env),
        output_log.new_file(f"worker-{hostname}"),
    )
    wait_until(
        lambda: " ready." in worker.output(), WORKER_READY_TIMEOUT_SECONDS, f"{hostname} ready"
    )
    return worker
