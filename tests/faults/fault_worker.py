"""The project's Celery app with a fault switched on by an environment variable.

``celery -A tests.faults.fault_worker worker`` runs the real tasks. With
FAULTS_HOLD_AFTER_PUBLISH_FILE set, the worker writes that file after the
first outbox batch was published and before its rows are marked, then waits.
The test can then kill the worker at exactly that point.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from app.celery_app import celery
from outbox.publisher import OutboxMessage, PublishResult, RedisPublisher

#: Seconds the held worker waits; far longer than any test waits for it to be killed.
HOLD_SECONDS = 600

app = celery

_hold_file = os.environ.get("FAULTS_HOLD_AFTER_PUBLISH_FILE")
if _hold_file:
    _publish_batch = RedisPublisher.publish_batch

    def _publish_then_hold(
        self: RedisPublisher, messages: Sequence[OutboxMessage], deadline: float | None = None
    ) -> list[PublishResult]:
        results = _publish_batch(self, messages, deadline)
        Path(_hold_file).write_text(" ".join(str(message.event_id) for message in messages))
        time.sleep(HOLD_SECONDS)
        return results

    RedisPublisher.publish_batch = _publish_then_hold  # type: ignore[method-assign]
