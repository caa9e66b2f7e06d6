"""The Celery application, configured from settings.

Imported by ``celery -A app`` through :mod:`app`'s lazy attribute, so the health
CLI and the domain packages can import ``app.settings`` without loading Celery.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from kombu import Queue

from app import embedded_broker
from app.logs import configure_logging
from app.settings import Settings, settings_or_exit
from health.loops import OUTBOX_QUEUE, SETTLEMENT_QUEUE, build_loop_specs

logger = logging.getLogger(__name__)

DEFAULT_QUEUE = "celery"
TASK_MODULES = ["tasks.outbox", "tasks.settlement"]

#: Seconds a task result stays in the result backend.
RESULT_EXPIRES_SECONDS = 86_400
#: Seconds Redis waits for an ack before redelivering a task; longer than any task may run.
REDIS_VISIBILITY_TIMEOUT_SECONDS = 3_600


def build_celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery configuration for ``settings``; each choice is explained inline."""
    specs = build_loop_specs(settings)

    if settings.is_embedded:
        transport_options = embedded_broker.transport_options(settings)
    else:
        transport_options = {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_SECONDS}

    return {
        "broker_url": settings.broker_url,
        "result_backend": None
        if settings.result_backend == "disabled"
        else settings.result_backend,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.broker_timeout_seconds,
        # JSON only: no pickle, so a message from the broker cannot run code in the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the task ends, and requeue when the worker process dies, so a
        # crash redelivers the message. This is safe because every task here is
        # idempotent: outbox rows are marked once, credits have idempotency keys.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message reserved per process: loop tasks are long, and prefetching
        # more would hold work that an idle worker could take.
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_seconds,
        "task_time_limit": settings.task_time_limit_seconds,
        "task_track_started": True,
        "result_expires": RESULT_EXPIRES_SECONDS,
        "result_extended": True,
        "timezone": settings.business_timezone,
        "enable_utc": True,
        "task_default_queue": DEFAULT_QUEUE,
        "task_queues": [Queue(DEFAULT_QUEUE), Queue(OUTBOX_QUEUE), Queue(SETTLEMENT_QUEUE)],
        "task_routes": {spec.task: {"queue": spec.queue} for spec in specs.values()},
        "beat_schedule": _beat_schedule(settings),
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }


def _beat_schedule(settings: Settings) -> dict[str, Any]:
    from tasks.schedule import build_beat_schedule

    return build_beat_schedule(build_loop_specs(settings))


def create_celery_app(settings: Settings) -> Celery:
    from health.bootstep import HeartbeatRearmStep, HeartbeatStep

    celery = Celery("settlement_workers", include=TASK_MODULES)
    celery.conf.update(build_celery_config(settings))
    # The heartbeat thread runs at worker level so it keeps ticking while the
    # consumer reconnects; the consumer step re-arms it after each reconnect.
    celery.steps["worker"].add(HeartbeatStep)
    celery.steps["consumer"].add(HeartbeatRearmStep)
    return celery


settings = settings_or_exit()
celery = create_celery_app(settings)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(settings.log_level, settings.log_format)


@signals.celeryd_init.connect
def _check_schema_before_worker(**_: Any) -> None:
    # celeryd_init comes from the ``celery worker`` program only, not from in-process test workers.
    from app.broker_check import broker_or_exit
    from app.schema_check import schema_or_exit

    schema_or_exit(settings, "worker")
    broker_or_exit(settings, "worker")


@signals.beat_init.connect
def _check_schema_before_beat(**_: Any) -> None:
    from app.broker_check import broker_or_exit
    from app.schema_check import schema_or_exit

    schema_or_exit(settings, "beat")
    broker_or_exit(settings, "beat")


@signals.worker_process_init.connect
def _reset_database_pool(**_: Any) -> None:
    # Connections opened before the pool fork must not be shared with children.
    from app.db import dispose_engines

    dispose_engines()


@signals.worker_ready.connect
def _log_worker_ready(sender: Any = None, **_: Any) -> None:
    queues = sorted(queue.name for queue in sender.app.amqp.queues.consume_from.values())
    logger.info(
        "worker %s is up: broker %s, consuming queues %s",
        getattr(sender, "hostname", "?"),
        sender.app.connection().as_uri(),
        ", ".join(queues),
    )


@signals.beat_init.connect
def _log_beat_schedule(sender: Any = None, **_: Any) -> None:
    specs = build_loop_specs(settings)
    logger.info("beat is up with %d scheduled loops", len(specs))
    for spec in specs.values():
        logger.info(
            "scheduled loop %s: task %s %s, queue %s, freshness budget %ss",
            spec.name,
            spec.task,
            spec.schedule_text,
            spec.queue,
            f"{spec.max_age_seconds:g}",
        )
