"""The base task turns outcomes into success or failure and records freshness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from celery import Celery

from app.celery_app import create_celery_app
from app.loop_task import OutcomeMissing
from app.outcome import IterationFailure
from app.settings import get_settings
from tests import loop_tasks
from tests.conftest import loop_record, point_settings_at


@pytest.fixture
def celery_app_for_tests(database_url: str) -> Iterator[Celery]:
    app = create_celery_app(get_settings())
    app.set_current()
    yield app


def run(app: Celery, name: str, **kwargs: int) -> object:
    return app.tasks[name].apply(kwargs=kwargs)


def test_clean_outcome_succeeds_and_refreshes(celery_app_for_tests: Celery) -> None:
    result = run(celery_app_for_tests, "tests.loop.report", done=3)

    assert result.state == "SUCCESS"
    assert result.result["counts"] == {"done": 3, "failed": 0}
    record = loop_record("tests.loop.report")
    assert record is not None
    assert isinstance(record.last_success_at, datetime)
    assert record.last_success_at.tzinfo is not None
    assert record.last_started_at is not None
    assert record.last_started_at <= record.last_success_at
    assert record.consecutive_failures == 0
    assert record.last_success_summary == result.result
    assert record.running_task_id is None


def test_failed_outcome_raises_and_keeps_success(celery_app_for_tests: Celery) -> None:
    run(celery_app_for_tests, "tests.loop.report", done=1)
    first_success = loop_record("tests.loop.report").last_success_at

    result = run(celery_app_for_tests, "tests.loop.report", done=2, failed=1)

    assert result.state == "FAILURE"
    assert isinstance(result.result, IterationFailure)
    assert result.result.summary["counts"] == {"done": 2, "failed": 1}
    record = loop_record("tests.loop.report")
    assert record.last_success_at == first_success
    assert record.consecutive_failures == 1
    assert record.last_error_class == "IterationFailure"
    assert record.last_failure_at >= first_success
    assert record.last_failure_summary["counts"] == {"done": 2, "failed": 1}


def test_raising_body_counts_failures(celery_app_for_tests: Celery) -> None:
    for _ in range(3):
        result = run(celery_app_for_tests, "tests.loop.raise")
        assert result.state == "FAILURE"
        assert isinstance(result.result, loop_tasks.DeliveryBroken)

    record = loop_record("tests.loop.raise")
    assert record.last_success_at is None
    assert record.consecutive_failures == 3
    assert record.last_error_class == "DeliveryBroken"
    assert "hunter2" not in record.last_error_message
    assert "postgresql://svc:***@db/x" in record.last_error_message


def test_swallowed_error_still_fails(celery_app_for_tests: Celery) -> None:
    result = run(celery_app_for_tests, "tests.loop.swallow")

    assert result.state == "FAILURE"
    assert isinstance(result.result, IterationFailure)
    record = loop_record("tests.loop.swallow")
    assert record.last_success_at is None
    assert record.consecutive_failures == 1


def test_success_resets_consecutive_failures(celery_app_for_tests: Celery) -> None:
    run(celery_app_for_tests, "tests.loop.report", failed=1)
    run(celery_app_for_tests, "tests.loop.report", failed=2)
    assert loop_record("tests.loop.report").consecutive_failures == 2

    result = run(celery_app_for_tests, "tests.loop.report", done=1)

    assert result.state == "SUCCESS"
    record = loop_record("tests.loop.report")
    assert record.consecutive_failures == 0
    assert record.last_success_at >= record.last_failure_at


def test_body_without_outcome_fails(celery_app_for_tests: Celery) -> None:
    result = run(celery_app_for_tests, "tests.loop.no_outcome")

    assert result.state == "FAILURE"
    assert isinstance(result.result, OutcomeMissing)
    assert loop_record("tests.loop.no_outcome").last_success_at is None


def test_recording_failure_keeps_task_result(
    celery_app_for_tests: Celery, closed_port: int, database_url: str
) -> None:
    point_settings_at(DATABASE_URL=f"postgresql+psycopg://nobody@127.0.0.1:{closed_port}/none")

    result = run(celery_app_for_tests, "tests.loop.report", done=1)

    assert result.state == "SUCCESS"
    assert result.result["counts"] == {"done": 1, "failed": 0}
    point_settings_at(DATABASE_URL=database_url)
    assert loop_record("tests.loop.report") is None


def test_iteration_failure_survives_json_round_trip() -> None:
    from celery.backends.base import Backend

    failure = IterationFailure("outbox.wallet: failed=2", {"counts": {"failed": 2}})
    backend = Backend(app=Celery(set_as_current=False))

    rebuilt = backend.exception_to_python(backend.prepare_exception(failure, "json"))

    assert type(rebuilt).__name__ == "IterationFailure"
    assert str(rebuilt) == "outbox.wallet: failed=2"
