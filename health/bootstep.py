"""Celery bootsteps that run the worker heartbeat (:class:`health.heartbeat.HeartbeatTimer`).

The timer is a daemon thread started by a step in the *worker* blueprint, not
a consumer timer. Celery's consumer timer entries fire from the consumer's
event loop, and that loop does not run while the consumer reconnects to a
lost broker, so a consumer timer would stop the liveness signal during a
broker outage. The worker-level thread keeps ticking through an outage.

A second, consumer-blueprint step re-arms the timer each time the consumer
(re)starts, including after a broker reconnect: it starts a new thread if
the old one died, and requests an immediate tick.
"""

from __future__ import annotations

import os
from typing import Any

from celery import bootsteps

from app.settings import get_settings
from health.database import HealthDatabase, connect
from health.heartbeat import HeartbeatTimer
from health.loops import build_loop_specs

#: Seconds one heartbeat database connection may take.
HEARTBEAT_CONNECT_TIMEOUT_SECONDS = 5.0


def _consumed_queues(worker: Any) -> list[str]:
    return sorted(queue.name for queue in worker.app.amqp.queues.consume_from.values())


class HeartbeatStep(bootsteps.StartStopStep):
    """Worker step: start the heartbeat timer with the worker and mark the row stopped at exit."""

    # After the pool and the embedded beat (``worker --beat``) have forked their
    # processes: a child forked while this thread holds SQLite's mutex would hang
    # on its first database call, as beat did with the embedded default.
    requires = ("celery.worker.components:Pool", "celery.worker.components:Beat")
    label = "health heartbeat"

    def create(self, worker: Any) -> HeartbeatTimer:
        settings = get_settings()
        database_url = settings.database_url

        def connect_database() -> HealthDatabase:
            return connect(database_url, HEARTBEAT_CONNECT_TIMEOUT_SECONDS)

        timer = HeartbeatTimer(
            connect=connect_database,
            specs=build_loop_specs(settings),
            hostname=worker.hostname,
            pid=os.getpid(),
            queues=_consumed_queues(worker),
            interval_seconds=settings.heartbeat_interval_seconds,
            startup_grace_seconds=settings.startup_grace_seconds,
        )
        worker.health_heartbeat = timer
        return timer


class HeartbeatRearmStep(bootsteps.StartStopStep):
    """Consumer step: re-arm the worker's heartbeat timer whenever the consumer starts."""

    requires = ("celery.worker.consumer:Connection",)
    label = "health heartbeat re-arm"

    def start(self, consumer: Any) -> None:
        timer = getattr(consumer.controller, "health_heartbeat", None)
        if timer is not None:
            timer.rearm()
