"""Prometheus metrics read from the database, parsed with prometheus-client's text parser."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.db import transaction
from health import freshness
from health.config import load_health_config
from health.database import HealthDatabase, connect
from health.metrics import build_registry
from outbox.enqueue import enqueue
from settlement.models import Currency, Player, SettlementItem, SettlementRun

PERIOD_START = datetime(2026, 12, 3, tzinfo=UTC)
PERIOD_END = datetime(2026, 12, 4, tzinfo=UTC)


def scrape(database_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = build_registry(lambda: connect(database_url, 5), load_health_config())
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def add_rebate_run() -> None:
    with transaction() as session:
        session.add(Currency(code="PHP", minor_units=2))
        players = [Player(currency="PHP") for _ in range(3)]
        session.add_all(players)
        session.flush()
        run = SettlementRun(
            kind="rebate",
            period_key="2026-12-03",
            period_start=PERIOD_START,
            period_end=PERIOD_END,
            status="partial",
            started_at=PERIOD_END,
            credited_amount_minor={"PHP": 12_345},
            failed_player_ids=[players[2].id],
        )
        session.add(run)
        session.flush()
        for player, status in zip(players, ["credited", "credited", "failed"], strict=True):
            session.add(
                SettlementItem(
                    run_id=run.id,
                    kind="rebate",
                    period_key="2026-12-03",
                    player_id=player.id,
                    currency="PHP",
                    basis_minor=100_000,
                    amount_minor=500,
                    status=status,
                    idempotency_key=f"rebate:2026-12-03:{player.id}",
                )
            )


def add_outbox_rows(health_db: HealthDatabase) -> None:
    with transaction() as session:
        for index in range(3):
            enqueue(
                session,
                "wallet",
                aggregate_type="wallet",
                aggregate_id=f"w-{index}",
                event_type="wallet.credited",
                payload={"index": index},
            )
    now = health_db.now()
    health_db.execute(
        "UPDATE wallet_outbox SET created_at = ? WHERE aggregate_id = 'w-0'",
        (health_db.bind_time(now.replace(year=now.year - 1)),),
    )
    health_db.execute(
        "UPDATE wallet_outbox SET parked_at = ? WHERE aggregate_id = 'w-2'",
        (health_db.bind_time(now),),
    )


def test_metrics_loop_series(health_db: HealthDatabase, database_url: str) -> None:
    freshness.record_start("outbox.agent", "t-1")
    freshness.record_success("outbox.agent", {}, "worker-a@test", "t-1")
    freshness.record_failure("settlement.rebate", RuntimeError("boom"), None, None)
    freshness.record_failure("settlement.rebate", RuntimeError("boom"), None, None)
    agent = health_db.fetch_all(
        "SELECT last_started_at, last_success_at FROM loop_health WHERE loop_name = 'outbox.agent'"
    )[0]
    from health.database import to_utc

    samples = scrape(database_url)

    loop = (("loop", "outbox.agent"),)
    assert samples[("loop_last_success_timestamp_seconds", loop)] == to_utc(agent[1]).timestamp()  # type: ignore[union-attr]
    assert samples[("loop_last_start_timestamp_seconds", loop)] == to_utc(agent[0]).timestamp()  # type: ignore[union-attr]
    assert samples[("loop_consecutive_failures", (("loop", "settlement.rebate"),))] == 2.0
    assert samples[("loop_status", (("loop", "outbox.agent"), ("status", "fresh")))] == 1.0
    assert samples[("loop_status", (("loop", "outbox.agent"), ("status", "stale")))] == 0.0
    assert samples[("loop_status", (("loop", "settlement.rebate"), ("status", "stale")))] == 1.0
    assert ("loop_last_success_timestamp_seconds", (("loop", "outbox.wallet"),)) not in samples
    assert samples[("health_database_up", ())] == 1.0
    for _name, labels in samples:
        assert "hostname" not in dict(labels)
        assert "worker" not in dict(labels)


def test_metrics_loop_max_age(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_MAX_AGE_SECONDS", "45")
    monkeypatch.setenv("SETTLEMENT_GRACE_SECONDS", "600")
    monkeypatch.setenv("LOSSBACK_PERIOD", "daily")

    samples = scrape(database_url)

    def max_age(loop: str) -> float:
        return samples[("loop_max_age_seconds", (("loop", loop),))]

    assert max_age("outbox.wallet") == 45.0
    assert max_age("outbox.rolling") == 45.0
    assert max_age("outbox.agent") == 45.0
    assert max_age("settlement.rebate") == 86_400.0 + 600.0
    assert max_age("settlement.cashback") == 7 * 86_400.0 + 600.0
    assert max_age("settlement.lossback") == 86_400.0 + 600.0


def test_metrics_outbox_series(health_db: HealthDatabase, database_url: str) -> None:
    add_outbox_rows(health_db)

    samples = scrape(database_url)

    wallet = (("stream", "wallet"),)
    assert samples[("outbox_backlog_rows", wallet)] == 2.0
    assert samples[("outbox_parked_rows", wallet)] == 1.0
    assert samples[("outbox_oldest_publishable_age_seconds", wallet)] > 364 * 86_400
    assert samples[("outbox_backlog_rows", (("stream", "agent"),))] == 0.0
    assert samples[("outbox_oldest_publishable_age_seconds", (("stream", "agent"),))] == 0.0


def test_metrics_settlement_series(health_db: HealthDatabase, database_url: str) -> None:
    add_rebate_run()

    samples = scrape(database_url)

    def rebate(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"kind": "rebate", **labels}.items())))]

    assert rebate("settlement_last_run_items", status="credited") == 2.0
    assert rebate("settlement_last_run_items", status="failed") == 1.0
    assert rebate("settlement_last_run_items", status="skipped") == 0.0
    assert rebate("settlement_last_run_status", status="partial") == 1.0
    assert rebate("settlement_last_run_status", status="succeeded") == 0.0
    assert rebate("settlement_last_run_credited_amount_minor", currency="PHP") == 12_345.0
    assert (
        "settlement_last_run_status",
        (("kind", "cashback"), ("status", "partial")),
    ) not in samples


def test_metrics_database_down(closed_port: int) -> None:
    samples = scrape(f"postgresql+psycopg://root@127.0.0.1:{closed_port}/settlement")

    assert samples == {("health_database_up", ()): 0.0}
