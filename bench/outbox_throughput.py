"""Outbox throughput: events/s from PostgreSQL to the broker, drained by one poller.

Figures, each from fresh child processes on a freshly seeded table:

* ``drain_stream`` on Redis (the production path: batched, pipelined publish);
* baseline (a): the same stored messages pushed with a pipelined Redis client,
  without the database, in batches of OUTBOX_BATCH_SIZE (the upper bound);
* baseline (b): the same poller (claim, publish, mark per batch), but each
  message sent with kombu ``Producer.publish``;
* ``drain_stream`` on RabbitMQ.

Every drain is checked: all rows must be marked published and the queue must
contain one message per row. Otherwise the benchmark raises.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from app.settings import Settings
from bench.common import (
    QUEUE_PREFIX,
    RABBITMQ_URL,
    REDIS_URL,
    Figure,
    Report,
    Sizes,
    apply_environment,
    peak_rss_mib,
    private_postgres,
    run_in_child,
    timed,
)

STREAM = "wallet"
EXCHANGE = f"outbox.{STREAM}"
EVENT_TYPE = "wallet.credited"
#: Rows per outbox batch (the OUTBOX_BATCH_SIZE default), in every figure but one.
BATCH_SIZE: int = Settings.model_fields["outbox_batch_size"].default
#: OUTBOX_BATCH_SIZE of the extra Redis figure: fewer, larger batches.
LARGE_BATCH_SIZE = 2000
#: Drain budget of the benchmark runs: large enough that one run drains every row.
DRAIN_BUDGET_SECONDS = 3600.0
#: kombu's separator inside a member of the Redis binding set ``_kombu.binding.EXCHANGE``.
KOMBU_BINDING_SEPARATOR = "\x06\x16"
#: The Redis sets in which kombu 5.7 keeps the exchange's bindings.
KOMBU_BINDING_KEYS = (f"_kombu.binding.{EXCHANGE}", f"_kombu.binding_permanent.{EXCHANGE}")

TARGET_EVENTS_PER_SECOND = 20_000
TARGET_TIMES_BASELINE_B = 5.0
TARGET_SHARE_OF_BASELINE_A = 0.15

SEED_SQL = """
INSERT INTO wallet_outbox (event_id, aggregate_type, aggregate_id, event_type, payload, headers)
SELECT gen_random_uuid(), 'wallet', 'player-' || (n % :aggregates), :event_type,
       jsonb_build_object(
           'player_id', n % :aggregates, 'amount_minor', 1000 + n % 997,
           'currency', 'PHP', 'kind', 'rebate', 'period', '2026-12-03',
           'ledger_entry_id', n),
       jsonb_build_object('trace_id', md5(n::text))
FROM generate_series(1, :rows) AS n
"""


def seed_outbox(database_url: str, rows: int) -> None:
    """Replace the wallet outbox with ``rows`` publishable rows over ``rows // 4`` aggregates."""
    from sqlalchemy import text

    from app.db import create_database_engine

    engine = create_database_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE wallet_outbox RESTART IDENTITY"))
            connection.execute(
                text(SEED_SQL),
                {"rows": rows, "aggregates": max(1, rows // 4), "event_type": EVENT_TYPE},
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE wallet_outbox"))
    finally:
        engine.dispose()


def outbox_environment(
    database_url: str, broker_url: str, queue: str, batch_size: int = BATCH_SIZE
) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "RESULT_BACKEND": "disabled",
        "OUTBOX_DESTINATIONS": f"{STREAM}:{queue}=#",
        "OUTBOX_BATCH_SIZE": str(batch_size),
        "OUTBOX_DRAIN_BUDGET_SECONDS": str(DRAIN_BUDGET_SECONDS),
        "LOG_LEVEL": "WARNING",
    }


def drain_child(environment: dict[str, str], per_message: bool) -> dict[str, Any]:
    """Drain the wallet stream in this (child) process; return seconds, counts and peak RSS."""
    apply_environment(environment)
    from app.db import get_engine
    from app.settings import get_settings
    from outbox.outcome import OutboxOutcome
    from outbox.poller import drain_stream, poll_batch
    from outbox.streams import stream_route

    settings = get_settings()
    engine = get_engine()
    rss_before = peak_rss_mib()

    started = time.perf_counter()
    if per_message:
        route = stream_route(STREAM, settings)
        outcome = OutboxOutcome(loop=route.loop)
        with PerMessagePublisher.open(settings, route) as publisher:
            while poll_batch(engine, route, publisher, settings, outcome):
                pass
    else:
        outcome = drain_stream(STREAM, settings, engine)
    seconds = time.perf_counter() - started

    engine.dispose()
    return {
        "seconds": seconds,
        "published": outcome.counts.get("published", 0),
        "ok": outcome.ok,
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }


class PerMessagePublisher:
    """Baseline (b): kombu ``Producer.publish`` per message, as a plain outbox poller does it."""

    @staticmethod
    @contextmanager
    def open(settings: Any, route: Any) -> Iterator[Any]:
        from kombu import Producer

        from outbox.publisher import (
            OutboxMessage,
            Publisher,
            PublishResult,
            PublishStatus,
            create_connection,
            publish_with_kombu,
        )

        class _Publisher(Publisher):
            def publish_batch(
                self, messages: Sequence[OutboxMessage], deadline: float | None = None
            ) -> list[PublishResult]:
                producer = Producer(
                    self.connection.default_channel, exchange=self.exchange, auto_declare=False
                )
                for message in messages:
                    publish_with_kombu(producer, message)
                return [PublishResult(m.event_id, PublishStatus.ACCEPTED) for m in messages]

        publisher = _Publisher(create_connection(settings), route, settings.broker_timeout_seconds)
        publisher.declare()
        with publisher:
            yield publisher


def pipelined_push_child(environment: dict[str, str], rows: int) -> dict[str, Any]:
    """Baseline (a): push ``rows`` stored messages in pipelined batches; no database."""
    apply_environment(environment)
    import redis

    from outbox.publisher import OutboxMessage, redis_stored_message

    queue = environment["OUTBOX_DESTINATIONS"].split(":", 1)[1].split("=", 1)[0]
    created_at = datetime.now(UTC)
    stored = [
        redis_stored_message(
            OutboxMessage(
                event_id=uuid.uuid4(),
                aggregate_type="wallet",
                aggregate_id=f"player-{n % max(1, rows // 4)}",
                event_type=EVENT_TYPE,
                payload={
                    "player_id": n % max(1, rows // 4),
                    "amount_minor": 1000 + n % 997,
                    "currency": "PHP",
                    "kind": "rebate",
                    "period": "2026-12-03",
                    "ledger_entry_id": n,
                },
                headers={"trace_id": uuid.uuid4().hex},
                created_at=created_at,
            ),
            EXCHANGE,
        )
        for n in range(1, rows + 1)
    ]
    client = redis.Redis.from_url(environment["BROKER_URL"])

    started = time.perf_counter()
    for start in range(0, rows, BATCH_SIZE):
        with client.pipeline(transaction=False) as pipeline:
            for message in stored[start : start + BATCH_SIZE]:
                pipeline.lpush(queue, message)
            replies = pipeline.execute()
        if not all(isinstance(reply, int) and reply > 0 for reply in replies):
            raise RuntimeError(f"baseline (a): an LPUSH onto {queue} failed")
    seconds = time.perf_counter() - started

    client.close()
    return {"seconds": seconds, "published": rows, "ok": True, "peak_rss_mib": peak_rss_mib()}


def _redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL)


def _clear_stale_bench_bindings() -> None:
    """Unbind benchmark queues left by an interrupted run; raise when a foreign queue is bound.

    Every queue bound to the exchange in this Redis database gets a copy of
    each benchmark message, so only the benchmark's own queue may be bound.
    """
    client = _redis_client()
    for binding_key in KOMBU_BINDING_KEYS:
        for member in client.smembers(binding_key):
            queue = member.decode().rsplit(KOMBU_BINDING_SEPARATOR, 1)[-1]
            if not queue.startswith(QUEUE_PREFIX):
                raise RuntimeError(
                    f"queue {queue} is bound to {EXCHANGE} in Redis {REDIS_URL}; set"
                    " BENCH_REDIS_URL to an unused database"
                )
            client.srem(binding_key, member)
            client.delete(queue)
    client.close()


def _cleanup_redis(queue: str) -> None:
    """Delete ``queue`` and its bindings."""
    client = _redis_client()
    client.delete(queue)
    for binding_key in KOMBU_BINDING_KEYS:
        for member in client.smembers(binding_key):
            if member.decode().endswith(KOMBU_BINDING_SEPARATOR + queue):
                client.srem(binding_key, member)
    client.close()


def _queue_length(queue: str) -> int:
    return int(_redis_client().llen(queue))


def _published_rows(database_url: str) -> int:
    from sqlalchemy import text

    from app.db import create_database_engine

    engine = create_database_engine(database_url)
    try:
        with engine.connect() as connection:
            query = text("SELECT count(*) FROM wallet_outbox WHERE published_at IS NOT NULL")
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def measure_drain(
    database_url: str,
    broker_url: str,
    rows: int,
    per_message: bool,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """Seed ``rows``, drain them in a child process, check every row arrived; return the result."""
    queue = f"{QUEUE_PREFIX}{os.getpid()}.{uuid.uuid4().hex[:6]}"
    seed_outbox(database_url, rows)
    environment = outbox_environment(database_url, broker_url, queue, batch_size)
    redis_broker = broker_url.startswith("redis")
    try:
        result = run_in_child(drain_child, environment, per_message)
        published = _published_rows(database_url)
        delivered = _queue_length(queue) if redis_broker else _amqp_queue_length(queue)
        if not result["ok"] or published != rows or delivered != rows:
            raise RuntimeError(
                f"drain of {rows} rows is incomplete: {published} rows marked published,"
                f" {delivered} messages in queue {queue}, outcome ok={result['ok']}"
            )
    finally:
        if redis_broker:
            _cleanup_redis(queue)
        else:
            _delete_amqp_queue(queue)
    result["rate"] = rows / result["seconds"]
    return result


def measure_pipelined_push(rows: int) -> dict[str, Any]:
    queue = f"{QUEUE_PREFIX}{os.getpid()}.{uuid.uuid4().hex[:6]}"
    environment = outbox_environment("sqlite:///unused.sqlite", REDIS_URL, queue)
    try:
        result = run_in_child(pipelined_push_child, environment, rows)
        if _queue_length(queue) != rows:
            raise RuntimeError(f"baseline (a): queue {queue} does not hold {rows} messages")
    finally:
        _cleanup_redis(queue)
    result["rate"] = rows / result["seconds"]
    return result


def _amqp_queue_length(queue: str) -> int:
    from kombu import Connection, Queue

    with Connection(RABBITMQ_URL) as connection:
        declared = Queue(queue, durable=True, channel=connection.default_channel)
        _, message_count, _ = declared.queue_declare(passive=True)
        return int(message_count)


def _delete_amqp_queue(queue: str) -> None:
    from kombu import Connection, Queue

    with Connection(RABBITMQ_URL) as connection:
        Queue(queue, channel=connection.default_channel).delete()


def _drains(
    database_url: str, broker_url: str, rows: int, runs: int, **options: Any
) -> list[dict[str, Any]]:
    return [measure_drain(database_url, broker_url, rows, **options) for _ in range(runs)]


def _rates(results: list[dict[str, Any]]) -> list[float]:
    return [result["rate"] for result in results]


def _hold_to_targets(figure: Figure, baseline_a: Figure, baseline_b: Figure) -> None:
    times_b = figure.median / baseline_b.median
    share_a = figure.median / baseline_a.median
    figure.target = (
        f">= {TARGET_EVENTS_PER_SECOND:,}/s, >= {TARGET_TIMES_BASELINE_B:g}x (b),"
        f" >= {TARGET_SHARE_OF_BASELINE_A:.0%} of (a)"
    )
    figure.met = (
        figure.median >= TARGET_EVENTS_PER_SECOND
        and times_b >= TARGET_TIMES_BASELINE_B
        and share_a >= TARGET_SHARE_OF_BASELINE_A
    )
    figure.note = f"{times_b:.1f}x baseline (b), {share_a:.0%} of baseline (a)"


def run(sizes: Sizes, report: Report, database_url: str, rabbitmq: bool = True) -> None:
    """Measure every outbox figure ``sizes.runs`` times and add them to ``report``."""
    _clear_stale_bench_bindings()
    rows = sizes.outbox_rows
    batched = _drains(database_url, REDIS_URL, rows, sizes.runs, per_message=False)
    large_batches = _drains(
        database_url,
        REDIS_URL,
        rows,
        sizes.runs,
        per_message=False,
        batch_size=LARGE_BATCH_SIZE,
    )
    pushed = [measure_pipelined_push(rows) for _ in range(sizes.runs)]
    per_message = _drains(
        database_url, REDIS_URL, sizes.outbox_per_message_rows, sizes.runs, per_message=True
    )
    report.raw["outbox_drain"] = batched

    name = "outbox_throughput"
    main = report.add(
        Figure(
            name,
            f"drain_stream, PostgreSQL to Redis, {rows:,} rows, batches of {BATCH_SIZE}",
            "events/s",
            _rates(batched),
        )
    )
    large = report.add(
        Figure(
            name,
            f"drain_stream, PostgreSQL to Redis, {rows:,} rows, batches of {LARGE_BATCH_SIZE}",
            "events/s",
            _rates(large_batches),
        )
    )
    baseline_a = report.add(
        Figure(
            name,
            f"baseline (a): pipelined LPUSH of the same messages, no database, {rows:,} rows,"
            f" batches of {BATCH_SIZE}",
            "events/s",
            _rates(pushed),
        )
    )
    baseline_b = report.add(
        Figure(
            name,
            "baseline (b): same poller, kombu Producer.publish per message,"
            f" {sizes.outbox_per_message_rows:,} rows",
            "events/s",
            _rates(per_message),
        )
    )
    _hold_to_targets(main, baseline_a, baseline_b)
    _hold_to_targets(large, baseline_a, baseline_b)

    if rabbitmq:
        amqp = _drains(
            database_url, RABBITMQ_URL, sizes.rabbitmq_rows, sizes.runs, per_message=False
        )
        report.add(
            Figure(
                name,
                "drain_stream, PostgreSQL to RabbitMQ (confirms per batch),"
                f" {sizes.rabbitmq_rows:,} rows, batches of {BATCH_SIZE}",
                "events/s",
                _rates(amqp),
            )
        )


def _timed_phases(phases: dict[str, float]) -> None:
    """Wrap the poller's steps in this process so that each adds its wall time to ``phases``.

    The claim of the next batch runs on a second thread while the current one
    is published, so the claim time overlaps the other steps.
    """
    from outbox import poller, publisher

    poller._claim = timed(
        phases, "claim and mark (claiming thread): begin, UPDATE ... RETURNING", poller._claim
    )
    poller._publish_and_commit = timed(
        phases, "publish and commit (main thread), total", poller._publish_and_commit
    )
    publisher.RedisPublisher.publish_batch = timed(
        phases,  # type: ignore[method-assign]
        "  of which publish: build messages, pipelined LPUSH",
        publisher.RedisPublisher.publish_batch,
    )
    poller._record_results = timed(phases, "  of which record results", poller._record_results)
    poller._message_of = timed(phases, "  of which build OutboxMessage tuples", poller._message_of)


def main() -> None:
    """Seed and drain once in this process, for profiling with py-spy or pyinstrument."""
    parser = argparse.ArgumentParser(description="drain the wallet outbox once, for profiling")
    parser.add_argument("--rows", type=int, default=20_000, help="rows to seed and drain")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="OUTBOX_BATCH_SIZE")
    parser.add_argument("--per-message", action="store_true", help="drain with baseline (b)")
    parser.add_argument(
        "--phases", action="store_true", help="print the wall time of each step of the batches"
    )
    arguments = parser.parse_args()

    phases: dict[str, float] = {}
    if arguments.phases:
        _timed_phases(phases)
    with private_postgres("profile") as database_url:
        queue = f"{QUEUE_PREFIX}profile.{os.getpid()}"
        seed_outbox(database_url, arguments.rows)
        environment = outbox_environment(database_url, REDIS_URL, queue, arguments.batch_size)
        try:
            result = drain_child(environment, arguments.per_message)
        finally:
            _cleanup_redis(queue)
    print(result, f"{arguments.rows / result['seconds']:.0f} events/s")
    for name, seconds in phases.items():
        print(f"  {name}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
