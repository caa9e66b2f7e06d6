"""Prometheus metrics read from the database at scrape time.

Label sets are fixed: ``loop``, ``stream``, ``kind``, ``status`` and
``currency``. No series carries a hostname, so a worker restart on another
host does not start new series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from health.config import HealthConfig
from health.database import HealthDatabase, from_json, unavailable_errors
from health.loops import OUTBOX_STREAMS, SETTLEMENT_KINDS
from health.probes import check_readiness
from health.readiness import LoopStatus
from health.snapshot import read_loop_records, read_outbox_lag

logger = logging.getLogger(__name__)

#: Run and item statuses of settlement records; the same as settlement.models.
RUN_STATUSES = ("running", "succeeded", "empty", "partial", "failed", "inconsistent")
ITEM_STATUSES = ("pending", "credited", "skipped", "failed", "voided")


class HealthCollector(Collector):
    """Reads loop, outbox and settlement state on each scrape through ``connect``."""

    def __init__(self, connect: Callable[[], HealthDatabase], config: HealthConfig) -> None:
        self.connect = connect
        self.config = config

    def describe(self) -> list[Metric]:
        # Nothing to describe up front, so registering does not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        database_up = GaugeMetricFamily(
            "health_database_up",
            "1 if the health exporter read the database on this scrape, else 0.",
        )
        try:
            with self.connect() as db:
                metrics = [*_loop_metrics(db, self.config), *_outbox_metrics(db)]
                metrics.extend(_settlement_metrics(db))
        except unavailable_errors() as exc:
            logger.error("metrics scrape could not read the database: %s", exc)
            database_up.add_metric([], 0)
            yield database_up
            return
        database_up.add_metric([], 1)
        yield database_up
        yield from metrics


def _loop_metrics(db: HealthDatabase, config: HealthConfig) -> list[Metric]:
    result = check_readiness(db, config)
    records = read_loop_records(db, [verdict.loop for verdict in result.readiness.verdicts])

    last_success = GaugeMetricFamily(
        "loop_last_success_timestamp_seconds",
        "Unix time of the loop's last successful iteration (database clock).",
        labels=["loop"],
    )
    last_start = GaugeMetricFamily(
        "loop_last_start_timestamp_seconds",
        "Unix time at which the loop's last iteration started (database clock).",
        labels=["loop"],
    )
    failures = GaugeMetricFamily(
        "loop_consecutive_failures",
        "Failed iterations of the loop since its last success.",
        labels=["loop"],
    )
    status = GaugeMetricFamily(
        "loop_status",
        "1 for the loop's current readiness status, 0 for the others.",
        labels=["loop", "status"],
    )
    max_age = GaugeMetricFamily(
        "loop_max_age_seconds",
        "Freshness budget: the maximum age of the loop's last success, in seconds, while fresh.",
        labels=["loop"],
    )
    for verdict in result.readiness.verdicts:
        record = records.get(verdict.loop)
        if record is not None and record.last_success_at is not None:
            last_success.add_metric([verdict.loop], record.last_success_at.timestamp())
        if record is not None and record.last_started_at is not None:
            last_start.add_metric([verdict.loop], record.last_started_at.timestamp())
        failures.add_metric([verdict.loop], verdict.consecutive_failures)
        max_age.add_metric([verdict.loop], verdict.max_age_seconds)
        for candidate in LoopStatus:
            status.add_metric([verdict.loop, str(candidate)], int(candidate == verdict.status))
    return [last_success, last_start, failures, status, max_age]


def _outbox_metrics(db: HealthDatabase) -> list[Metric]:
    now = db.now()
    backlog = GaugeMetricFamily(
        "outbox_backlog_rows", "Outbox rows not yet published and not parked.", labels=["stream"]
    )
    oldest_age = GaugeMetricFamily(
        "outbox_oldest_publishable_age_seconds",
        "Age of the oldest outbox row not yet published and not parked; 0 when there is none.",
        labels=["stream"],
    )
    parked = GaugeMetricFamily(
        "outbox_parked_rows",
        "Outbox rows parked after too many failed publishes and not discarded.",
        labels=["stream"],
    )
    for stream, lag in read_outbox_lag(db, OUTBOX_STREAMS).items():
        backlog.add_metric([stream], lag.publishable_rows)
        age = 0.0
        if lag.oldest_publishable_at is not None:
            age = max(0.0, (now - lag.oldest_publishable_at).total_seconds())
        oldest_age.add_metric([stream], age)
        parked.add_metric([stream], lag.parked_rows)
    return [backlog, oldest_age, parked]


def _settlement_metrics(db: HealthDatabase) -> list[Metric]:
    items = GaugeMetricFamily(
        "settlement_last_run_items",
        "Items of the kind's most recent settlement run, by item status.",
        labels=["kind", "status"],
    )
    run_status = GaugeMetricFamily(
        "settlement_last_run_status",
        "1 for the status of the kind's most recent settlement run, 0 for the others.",
        labels=["kind", "status"],
    )
    amount = GaugeMetricFamily(
        "settlement_last_run_credited_amount_minor",
        "Amount credited by the kind's most recent settlement run, in currency minor units.",
        labels=["kind", "currency"],
    )
    for kind in SETTLEMENT_KINDS:
        runs = db.fetch_all(
            "SELECT id, status, credited_amount_minor FROM settlement_runs WHERE kind = ? "
            "ORDER BY started_at DESC, id DESC LIMIT 1",
            (kind,),
        )
        if not runs:
            continue
        run_id, status, credited = runs[0]
        counts = dict(
            db.fetch_all(
                "SELECT status, count(*) FROM settlement_items WHERE run_id = ? GROUP BY status",
                (run_id,),
            )
        )
        for item_status in ITEM_STATUSES:
            items.add_metric([kind, item_status], int(counts.get(item_status, 0)))
        for candidate in RUN_STATUSES:
            run_status.add_metric([kind, candidate], int(candidate == status))
        for currency, minor in sorted((from_json(credited) or {}).items()):
            amount.add_metric([kind, str(currency)], int(minor))
    return [items, run_status, amount]


def build_registry(
    connect: Callable[[], HealthDatabase], config: HealthConfig
) -> CollectorRegistry:
    """Return a registry holding only the health collector."""
    registry = CollectorRegistry()
    registry.register(HealthCollector(connect, config))
    return registry
