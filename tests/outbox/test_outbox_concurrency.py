"""Two poller processes on the same stream at once never publish a row twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.conftest import point_settings_at
from tests.outbox.outbox_testing import ROUTED_EVENT_TYPE, add_events, read_queue, rows_by_event_id

ROW_COUNT = 600
#: Seconds each poller process may take before the test fails.
POLLER_TIMEOUT_SECONDS = 60

POLLER_SCRIPT = """
import json
from outbox.poller import drain_stream
print(json.dumps(drain_stream("wallet").summary()))
"""


@pytest.mark.postgres
@pytest.mark.redis
def test_two_poller_processes_publish_each_row_once(
    pg_database_url: str, redis_url: str, project_root: Path
) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    queue_name = f"test.wallet.{uuid.uuid4().hex[:8]}"
    destinations = f"wallet:{queue_name}=#"
    point_settings_at(BROKER_URL=redis_url, OUTBOX_DESTINATIONS=destinations)
    try:
        ids = add_events(
            "wallet", [(f"w{index % 40}", ROUTED_EVENT_TYPE) for index in range(ROW_COUNT)]
        )
        env = {
            **os.environ,
            "DATABASE_URL": pg_database_url,
            "BROKER_URL": redis_url,
            "OUTBOX_DESTINATIONS": destinations,
            "OUTBOX_BATCH_SIZE": "25",
        }
        pollers = [
            subprocess.Popen(
                [sys.executable, "-c", POLLER_SCRIPT],
                cwd=project_root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [poller.communicate(timeout=POLLER_TIMEOUT_SECONDS) for poller in pollers]
        messages = read_queue(redis_url, queue_name)
    finally:
        point_settings_at(BROKER_URL="filesystem://", OUTBOX_DESTINATIONS=None)

    for poller, (_, stderr) in zip(pollers, outputs, strict=True):
        assert poller.returncode == 0, stderr
    summaries = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    published_counts = [summary["counts"]["published"] for summary in summaries]
    assert sum(published_counts) == ROW_COUNT
    assert all(summary["ok"] for summary in summaries)

    message_ids = Counter(message.properties["message_id"] for message in messages)
    assert len(messages) == ROW_COUNT
    assert set(message_ids) == {str(event_id) for event_id in ids}
    assert max(message_ids.values()) == 1
    rows = rows_by_event_id("wallet")
    assert all(row.published_at is not None for row in rows.values())
