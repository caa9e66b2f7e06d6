"""A real worker (celery.contrib.pytest) runs a tracked loop task through a real broker."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from app.celery_app import build_celery_config
from app.outcome import IterationFailure
from app.settings import get_settings

# Imported at module level, outside any test: celery.contrib.testing restores
# the set of shared-task registrations after each test, so tasks first imported
# inside a test would be missing from the next test's app.
from tests import loop_tasks  # noqa: F401
from tests.conftest import loop_record, point_settings_at

#: Seconds a test waits for the worker to return a task result.
RESULT_TIMEOUT_SECONDS = 30


@pytest.fixture(params=["embedded", "redis"])
def celery_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Embedded: filesystem broker and SQLite. Redis: Redis broker and backend, PostgreSQL."""
    saved = {name: get_settings().model_dump()[name.lower()] for name in ("BROKER_URL",)}
    if request.param == "embedded":
        request.getfixturevalue("sqlite_database_url")
        point_settings_at(
            VAR_DIR=str(tmp_path),
            BROKER_URL="filesystem://",
            RESULT_BACKEND=f"db+sqlite:///{tmp_path}/results.sqlite",
        )
    else:
        request.getfixturevalue("pg_database_url")
        redis_url = request.getfixturevalue("redis_url")
        point_settings_at(BROKER_URL=redis_url, RESULT_BACKEND=redis_url)
    yield build_celery_config(get_settings())
    point_settings_at(**saved)


@pytest.fixture(scope="session")
def celery_includes() -> list[str]:
    return ["tests.loop_tasks"]


def test_worker_runs_tracked_task(celery_app: Celery, celery_worker: Any) -> None:
    result = celery_app.tasks["tests.loop.report"].delay(done=4)

    summary = result.get(timeout=RESULT_TIMEOUT_SECONDS)

    assert summary["counts"] == {"done": 4, "failed": 0}
    assert result.state == "SUCCESS"
    record = loop_record("tests.loop.report")
    assert record is not None
    assert record.last_success_at is not None
    # The in-thread test worker passes the machine's name, a real worker its node name.
    assert record.last_success_hostname in {celery_worker.hostname, socket.gethostname()}
    assert record.consecutive_failures == 0


def test_worker_reports_failed_outcome(celery_app: Celery, celery_worker: Any) -> None:
    result = celery_app.tasks["tests.loop.report"].delay(done=1, failed=2)

    with pytest.raises(IterationFailure) as caught:
        result.get(timeout=RESULT_TIMEOUT_SECONDS)

    assert result.state == "FAILURE"
    assert "failed=2" in str(caught.value)
    record = loop_record("tests.loop.report")
    assert record is not None
    assert record.last_success_at is None
    assert record.consecutive_failures == 1
