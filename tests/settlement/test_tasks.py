"""The settlement Celery tasks and the ``python -m settlement`` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from celery import Celery

import tasks.settlement as settlement_tasks
from app.celery_app import create_celery_app
from app.db import transaction
from app.settings import get_settings
from settlement import cli
from settlement.errors import SettlementNonDelivery, SettlementPartialDelivery
from tests.conftest import loop_record
from tests.settlement.seed import (
    DAY,
    add_bet,
    add_player,
    add_terms,
    ledger_count_by_player,
    ledger_rows,
    runs,
)


@pytest.fixture
def celery_app(pg_world: str) -> Iterator[Celery]:
    app = create_celery_app(get_settings())
    app.set_current()
    yield app


def seed(with_wallet: int, without_wallet: int) -> None:
    with transaction() as session:
        add_terms(session, "rebate")
        for _ in range(with_wallet):
            add_bet(session, add_player(session), 10000)
        for _ in range(without_wallet):
            add_bet(session, add_player(session, wallet_status=None), 10000)


def test_tasks_registered_with_loop_names(celery_app: Celery) -> None:
    for kind in ("rebate", "cashback", "lossback"):
        task = celery_app.tasks[f"tasks.settlement.{kind}"]
        assert task.loop == f"settlement.{kind}"
    assert settlement_tasks.SETTLEMENT_TASKS["rebate"].name == "tasks.settlement.rebate"


def test_task_all_fail_keeps_freshness(celery_app: Celery) -> None:
    seed(with_wallet=0, without_wallet=2)

    result = celery_app.tasks["tasks.settlement.rebate"].apply(kwargs={"period": DAY})

    assert result.state == "FAILURE"
    assert type(result.result) is SettlementNonDelivery
    assert result.result.summary["status"] == "failed"
    assert result.result.summary["failed_player_ids"] == [1, 2]
    record = loop_record("settlement.rebate")
    assert record is not None
    assert record.last_success_at is None
    assert record.consecutive_failures == 1
    assert record.last_error_class == "SettlementNonDelivery"
    assert ledger_rows() == []


def test_task_partial_raises_subclass(celery_app: Celery) -> None:
    seed(with_wallet=2, without_wallet=1)

    result = celery_app.tasks["tasks.settlement.rebate"].apply(kwargs={"period": DAY})

    assert result.state == "FAILURE"
    assert isinstance(result.result, SettlementPartialDelivery)
    assert "failed players: 3" in str(result.result)
    assert ledger_count_by_player() == {1: 1, 2: 1}
    record = loop_record("settlement.rebate")
    assert record is not None
    assert record.last_success_at is None


def test_task_success_refreshes_freshness(celery_app: Celery) -> None:
    seed(with_wallet=2, without_wallet=0)
    kwargs = json.loads('{"period": "2026-12-03"}')

    result = celery_app.tasks["tasks.settlement.rebate"].apply(kwargs=kwargs)

    assert result.state == "SUCCESS"
    assert result.result["status"] == "succeeded"
    assert result.result["counts"]["credited"] == 2
    assert result.result["credited_amount_minor"] == {"PHP": 200}
    record = loop_record("settlement.rebate")
    assert record is not None
    assert record.last_success_at is not None
    assert record.last_success_summary == result.result
    [run] = runs()
    assert run.task_id == result.id


def test_cli_run_non_delivery_exits_1(
    celery_app: Celery, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(with_wallet=1, without_wallet=1)

    code = cli.main(["run", "--kind", "rebate", "--period", DAY])

    assert code == 1
    error = capsys.readouterr().err
    assert "settlement rebate did not deliver: settlement rebate 2026-12-03 run 1 partial" in error
    assert "failed players: 2" in error


def test_cli_run_success_exits_0(celery_app: Celery, capsys: pytest.CaptureFixture[str]) -> None:
    seed(with_wallet=1, without_wallet=0)

    code = cli.main(["run", "--kind", "rebate", "--period", DAY])

    assert code == 0
    assert "run 1 succeeded: eligible=1 credited=1" in capsys.readouterr().out


def test_cli_run_bad_period_exits_2(celery_app: Celery, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--kind", "cashback", "--period", DAY])

    assert code == 2
    assert "the week containing 2026-12-03 is 2026-W49" in capsys.readouterr().err
    assert runs() == []
    assert loop_record("settlement.cashback") is None


def test_cli_dry_run_prints_and_writes_nothing(
    pg_world: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(with_wallet=2, without_wallet=0)

    code = cli.main(["run", "--kind", "rebate", "--period", DAY, "--dry-run", "--json"])

    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["dry_run"] is True
    assert document["would_credit_minor"] == {"PHP": 200}
    assert [item["status"] for item in document["items"]] == ["would_credit", "would_credit"]
    assert runs() == []
    assert ledger_rows() == []


def test_cli_report_and_void(celery_app: Celery, capsys: pytest.CaptureFixture[str]) -> None:
    seed(with_wallet=1, without_wallet=1)
    cli.main(["run", "--kind", "rebate", "--period", DAY])
    capsys.readouterr()

    code = cli.main(["report", "--kind", "rebate", "--period", DAY, "--json"])

    assert code == 0
    [run] = json.loads(capsys.readouterr().out)["runs"]
    assert run["status"] == "partial"
    assert run["eligible"] == 1 + 1
    assert run["failed_player_ids"] == [2]

    code = cli.main(
        ["void", "--run-id", "1", "--player", "2", "--reason", "no wallet", "--actor", "ops"]
    )

    assert code == 0
    assert "voided the rebate 2026-12-03 item of player 2 in run 1" in capsys.readouterr().out
    code = cli.main(["report", "--kind", "rebate", "--period", DAY])
    table = capsys.readouterr().out
    assert code == 0
    assert "partial" in table
    assert "failed players" not in table


def test_cli_void_unknown_item_exits_1(pg_world: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["void", "--run-id", "7", "--player", "1", "--reason", "x"])

    assert code == 1
    assert "void rejected, nothing changed: run 7 has no item for player 1" in (
        capsys.readouterr().err
    )


def test_cli_report_without_runs_exits_1(pg_world: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["report", "--kind", "cashback", "--period", "2026-W48"])

    assert code == 1
    assert "no settlement run found for cashback 2026-W48" in capsys.readouterr().err
