"""Readiness as a pure function of loop records, specs and the database's "now"."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from health.config import load_health_config
from health.loops import LoopSpec, build_loop_specs
from health.readiness import LoopRecord, LoopStatus, evaluate, select_specs

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)

WALLET = LoopSpec(
    name="outbox.wallet",
    task="tasks.outbox.wallet",
    queue="outbox",
    max_age_seconds=120,
    time_limit_seconds=600,
    interval_seconds=5,
    outbox_stream="wallet",
)
REBATE = LoopSpec(
    name="settlement.rebate",
    task="tasks.settlement.rebate",
    queue="settlement",
    max_age_seconds=86_400 + 10_800,
    time_limit_seconds=600,
    cron="30 0 * * *",
)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def verdict_of(record: LoopRecord, spec: LoopSpec = WALLET, **options: object):  # type: ignore[no-untyped-def]
    readiness = evaluate({record.loop_name: record}, [spec], NOW, **options)  # type: ignore[arg-type]
    return readiness.verdicts[0]


def test_evaluate_recent_success_fresh() -> None:
    record = LoopRecord(
        "outbox.wallet", last_started_at=ago(31), last_finished_at=ago(30), last_success_at=ago(30)
    )

    verdict = verdict_of(record)

    assert verdict.status == LoopStatus.FRESH
    assert verdict.last_success_age_seconds == 30.0
    assert verdict.reason == "last success 30s ago"


def test_evaluate_failing_past_max_age_stale() -> None:
    record = LoopRecord(
        "outbox.wallet",
        last_started_at=ago(2),
        last_finished_at=ago(1),
        last_success_at=ago(121),
        consecutive_failures=24,
        last_error_message="OutboxPublishFailure: broker unavailable",
    )

    verdict = verdict_of(record)

    assert verdict.status == LoopStatus.STALE
    assert verdict.reason == (
        "last success 121s ago, over the maximum age of 120s; 24 consecutive failures, "
        "last: OutboxPublishFailure: broker unavailable"
    )


def test_evaluate_failing_within_max_age_fresh() -> None:
    record = LoopRecord(
        "outbox.wallet",
        last_started_at=ago(2),
        last_finished_at=ago(1),
        last_success_at=ago(60),
        consecutive_failures=3,
    )

    assert verdict_of(record).status == LoopStatus.FRESH


def test_evaluate_not_running_stale() -> None:
    record = LoopRecord(
        "outbox.wallet",
        last_started_at=ago(501),
        last_finished_at=ago(500),
        last_success_at=ago(500),
    )

    verdict = verdict_of(record)

    assert verdict.status == LoopStatus.STALE
    assert verdict.reason == (
        "last success 500s ago, over the maximum age of 120s; "
        "no iteration started since (is beat running and the broker reachable?)"
    )


def test_evaluate_unfinished_iteration_hung() -> None:
    record = LoopRecord(
        "settlement.rebate",
        last_started_at=ago(601),
        running_task_id="t-9",
        last_finished_at=ago(3600),
        last_success_at=ago(3600),
    )

    verdict = verdict_of(record, REBATE)

    assert verdict.status == LoopStatus.HUNG
    assert verdict.reason == (
        "iteration t-9 started 601s ago and has not finished within its time limit of 600s"
    )


def test_evaluate_running_within_time_limit_fresh() -> None:
    record = LoopRecord(
        "settlement.rebate",
        last_started_at=ago(599),
        running_task_id="t-9",
        last_finished_at=ago(3600),
        last_success_at=ago(3600),
    )

    assert verdict_of(record, REBATE).status == LoopStatus.FRESH


def test_evaluate_finished_iteration_not_hung() -> None:
    record = LoopRecord(
        "settlement.rebate",
        last_started_at=ago(900),
        running_task_id="t-9",
        last_finished_at=ago(800),
        last_success_at=ago(800),
    )

    assert verdict_of(record, REBATE).status == LoopStatus.FRESH


def test_evaluate_no_success_within_grace_never() -> None:
    record = LoopRecord("outbox.wallet")

    verdict = verdict_of(record, worker_started_at=ago(299), startup_grace_seconds=300)

    assert verdict.status == LoopStatus.NEVER
    assert verdict.ready is True


def test_evaluate_no_success_after_grace_stale() -> None:
    record = LoopRecord(
        "outbox.wallet",
        last_started_at=ago(10),
        last_finished_at=ago(9),
        consecutive_failures=2,
        last_error_message="boom",
    )

    verdict = verdict_of(record, worker_started_at=ago(301), startup_grace_seconds=300)

    assert verdict.status == LoopStatus.STALE
    assert verdict.reason == "no success recorded; 2 consecutive failures, last: boom"


def test_evaluate_no_worker_start_no_grace() -> None:
    verdict = verdict_of(LoopRecord("outbox.wallet"), startup_grace_seconds=300)

    assert verdict.status == LoopStatus.STALE
    assert verdict.reason == "no iteration has run (is beat running and the broker reachable?)"


def test_evaluate_weekly_loop_grace_is_its_budget() -> None:
    weekly = LoopSpec(
        name="settlement.cashback",
        task="t",
        queue="settlement",
        max_age_seconds=7 * 86_400 + 10_800,
        time_limit_seconds=600,
        cron="0 1 * * 1",
    )

    verdict = verdict_of(
        LoopRecord("settlement.cashback"),
        weekly,
        worker_started_at=ago(3 * 86_400),
        startup_grace_seconds=300,
    )

    assert verdict.status == LoopStatus.NEVER


def test_evaluate_old_publishable_row_lagging() -> None:
    record = LoopRecord(
        "outbox.wallet", last_started_at=ago(2), last_finished_at=ago(1), last_success_at=ago(1)
    )

    verdict = verdict_of(record, oldest_publishable_at={"wallet": ago(121)})

    assert verdict.status == LoopStatus.LAGGING
    assert verdict.ready is False
    assert verdict.reason == (
        "succeeds, but the oldest publishable wallet outbox row is 121s old, "
        "over the maximum age of 120s"
    )


def test_evaluate_young_publishable_row_fresh() -> None:
    record = LoopRecord(
        "outbox.wallet", last_started_at=ago(2), last_finished_at=ago(1), last_success_at=ago(1)
    )

    verdict = verdict_of(record, oldest_publishable_at={"wallet": ago(119)})

    assert verdict.status == LoopStatus.FRESH


def test_readiness_one_stale_critical_loop_not_ready() -> None:
    records = {
        "outbox.wallet": LoopRecord("outbox.wallet", last_success_at=ago(1)),
        "settlement.rebate": LoopRecord("settlement.rebate", last_success_at=ago(200_000)),
    }

    readiness = evaluate(records, [WALLET, REBATE], NOW)

    assert readiness.ready is False
    assert readiness.reason == (
        "settlement.rebate stale: last success 200000s ago, over the maximum age of 97200s; "
        "no iteration started since (is beat running and the broker reachable?)"
    )


def test_readiness_non_critical_loop_ignored() -> None:
    optional = LoopSpec(
        name="report",
        task="t",
        queue="outbox",
        max_age_seconds=10,
        time_limit_seconds=10,
        interval_seconds=5,
        critical=False,
    )
    records = {"outbox.wallet": LoopRecord("outbox.wallet", last_success_at=ago(1))}

    readiness = evaluate(records, [WALLET, optional], NOW)

    assert readiness.ready is True
    assert [v.status for v in readiness.verdicts] == [LoopStatus.FRESH, LoopStatus.STALE]


def test_evaluate_ignores_host_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    record = LoopRecord("outbox.wallet", last_success_at=ago(30))
    before = verdict_of(record)

    monkeypatch.setattr(time, "time", lambda: 0.0)
    after = verdict_of(record)

    assert after == before
    assert after.status == LoopStatus.FRESH


def test_select_specs_by_queue() -> None:
    specs = build_loop_specs(load_health_config({}))

    chosen = select_specs(specs, queues=["settlement"])

    assert [spec.name for spec in chosen] == [
        "settlement.rebate",
        "settlement.cashback",
        "settlement.lossback",
    ]


def test_select_specs_unknown_loop_raises() -> None:
    specs = build_loop_specs(load_health_config({}))

    with pytest.raises(KeyError):
        select_specs(specs, loops=["outbox.nope"])
