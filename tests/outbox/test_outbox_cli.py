"""The outbox CLI: status, publish --once, and requeue and discard of parked rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import select, update

from app.db import transaction
from outbox import cli
from outbox.models import OutboxOperatorAction
from outbox.poller import outbox_table
from tests.conftest import loop_record, point_settings_at
from tests.outbox.outbox_testing import (
    ROUTED_EVENT_TYPE,
    UNROUTED_EVENT_TYPE,
    add_events,
    read_queue,
    route_only,
    rows_by_event_id,
)


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() replaces the root logger's handlers, which would remove pytest's.
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)


@pytest.fixture
def redis_queue(pg_database_url: str, redis_url: str) -> Iterator[str]:
    redis.Redis.from_url(redis_url).flushdb()
    queue_name = f"test.wallet.{uuid.uuid4().hex[:8]}"
    route_only(queue_name, BROKER_URL=redis_url)
    yield queue_name
    point_settings_at(BROKER_URL="filesystem://", OUTBOX_DESTINATIONS=None)


def park(event_id: uuid.UUID, attempts: int = 3) -> None:
    table = outbox_table("wallet")
    with transaction() as session:
        session.execute(
            update(table)
            .where(table.c.event_id == event_id)
            .values(
                attempts=attempts,
                last_error="unroutable: test",
                parked_at=table.c.created_at,
                next_attempt_at=table.c.created_at,
            )
        )


def operator_actions() -> list[OutboxOperatorAction]:
    with transaction() as session:
        return list(session.scalars(select(OutboxOperatorAction).order_by(OutboxOperatorAction.id)))


def test_status_json_lists_parked_rows(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parked, _blocked = add_events("wallet", [("a", ROUTED_EVENT_TYPE), ("a", ROUTED_EVENT_TYPE)])
    add_events("wallet", [("b", ROUTED_EVENT_TYPE)])
    park(parked)

    exit_code = cli.main(["status", "--json"])

    assert exit_code == 0
    streams = {entry["stream"]: entry for entry in json.loads(capsys.readouterr().out)["streams"]}
    wallet = streams["wallet"]
    assert wallet["backlog"] == 2
    assert wallet["parked"] == 1
    assert wallet["oldest_unpublished_age_seconds"] >= 0
    assert [row["event_id"] for row in wallet["parked_rows"]] == [str(parked)]
    assert wallet["parked_rows"][0]["attempts"] == 3
    assert wallet["parked_rows"][0]["last_error"] == "unroutable: test"
    assert streams["agent"] == {
        "stream": "agent",
        "backlog": 0,
        "oldest_unpublished_age_seconds": None,
        "parked": 0,
        "parked_rows": [],
    }


def test_status_table_names_streams(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    parked = add_events("wallet", [("a", ROUTED_EVENT_TYPE)])[0]
    park(parked)

    assert cli.main(["status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["STREAM", "BACKLOG", "OLDEST", "UNPUBLISHED", "PARKED"]
    assert lines[1].split()[0] == "wallet"
    assert lines[1].split()[1] == "0"
    assert lines[1].split()[3] == "1"
    assert f"event {parked}" in lines[4]


@pytest.mark.postgres
@pytest.mark.redis
def test_publish_once_exit_codes(redis_queue: str, capsys: pytest.CaptureFixture[str]) -> None:
    routed = add_events("wallet", [("a", ROUTED_EVENT_TYPE)])[0]

    assert cli.main(["publish", "--stream", "wallet", "--once"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["published"] == 1
    assert rows_by_event_id("wallet")[routed].published_at is not None
    success_at = loop_record("outbox.wallet").last_success_at

    failing = add_events("wallet", [("b", UNROUTED_EVENT_TYPE)])[0]

    assert cli.main(["publish", "--stream", "wallet", "--once"]) == 1
    assert "publish of stream wallet failed" in capsys.readouterr().err
    assert rows_by_event_id("wallet")[failing].attempts == 1
    assert loop_record("outbox.wallet").last_success_at == success_at


@pytest.mark.postgres
@pytest.mark.redis
def test_requeue_then_publish_in_order(redis_queue: str) -> None:
    parked, later = add_events("wallet", [("a", UNROUTED_EVENT_TYPE), ("a", ROUTED_EVENT_TYPE)])
    park(parked)
    route_only(redis_queue, binding_key="wallet.*")

    exit_code = cli.main(
        ["requeue", "--event-id", str(parked), "--reason", "queue bound", "--actor", "ops-ana"]
    )

    assert exit_code == 0
    row = rows_by_event_id("wallet")[parked]
    assert row.parked_at is None
    assert row.attempts == 0
    assert row.next_attempt_at is None
    actions = operator_actions()
    assert [(a.action, a.event_id, a.actor, a.reason, a.stream) for a in actions] == [
        ("requeue", parked, "ops-ana", "queue bound", "wallet")
    ]

    assert cli.main(["publish", "--stream", "wallet", "--once"]) == 0
    messages = read_queue(redis_queue_url(), redis_queue)
    assert [m.properties["message_id"] for m in messages] == [str(parked), str(later)]


def redis_queue_url() -> str:
    from app.settings import get_settings

    return get_settings().broker_url


@pytest.mark.postgres
@pytest.mark.redis
def test_discard_unblocks_aggregate(
    redis_queue: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USER", "ops-ben")
    parked, later = add_events("wallet", [("a", UNROUTED_EVENT_TYPE), ("a", ROUTED_EVENT_TYPE)])
    park(parked)

    exit_code = cli.main(["discard", "--event-id", str(parked), "--reason", "duplicate event"])

    assert exit_code == 0
    assert capsys.readouterr().out.strip() == f"discard wallet {parked}"
    row = rows_by_event_id("wallet")[parked]
    assert row.discarded_at is not None
    assert row.parked_at is not None
    assert [(a.action, a.actor) for a in operator_actions()] == [("discard", "ops-ben")]

    assert cli.main(["publish", "--stream", "wallet", "--once"]) == 0
    rows = rows_by_event_id("wallet")
    assert rows[later].published_at is not None
    assert rows[parked].published_at is None


def test_requeue_rejects_row_not_parked(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parked, pending = add_events("wallet", [("a", ROUTED_EVENT_TYPE), ("b", ROUTED_EVENT_TYPE)])
    park(parked)

    exit_code = cli.main(
        ["requeue", "--event-id", str(parked), "--event-id", str(pending), "--reason", "retry"]
    )

    assert exit_code == 1
    assert f"event {pending} in stream wallet is not parked" in capsys.readouterr().err
    assert rows_by_event_id("wallet")[parked].parked_at is not None
    assert operator_actions() == []


def test_requeue_requires_reason(database_url: str) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["requeue", "--event-id", str(uuid.uuid4())])

    assert raised.value.code == 2
