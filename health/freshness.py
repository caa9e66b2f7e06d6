"""The freshness store: start, success and failure of each loop iteration.

Every time written here comes from the database clock
(:func:`app.db.database_now_expression`).
Only :func:`record_success` moves ``last_success_at``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Table, case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db import database_now_expression, get_engine
from app.redaction import describe_error
from health.models import LoopHealth

_TABLE: Table = LoopHealth.__table__  # type: ignore[assignment]


@contextmanager
def _connection(engine: Engine | None) -> Iterator[Connection]:
    """Yield a connection for one upsert.

    Each record is a single statement, so on PostgreSQL it runs in autocommit
    mode, which saves the BEGIN and COMMIT round trips of a transaction. SQLite
    keeps a transaction, whose BEGIN IMMEDIATE queues it behind other writers.
    """
    engine = engine or get_engine()
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
    else:
        with engine.begin() as connection:
            yield connection


def _upsert(connection: Connection, values: dict[str, Any], updates: dict[str, Any]) -> None:
    """Insert the loop's row with ``values``, or apply ``updates`` to the existing row."""
    dialect = connection.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_TABLE).values(**values)
    statement = statement.on_conflict_do_update(index_elements=["loop_name"], set_=updates)
    connection.execute(statement)


def record_start(loop: str, task_id: str | None, engine: Engine | None = None) -> None:
    """Record that an iteration of ``loop`` started now."""
    with _connection(engine) as connection:
        now = database_now_expression(connection.dialect.name)
        values = {"loop_name": loop, "last_started_at": now, "running_task_id": task_id}
        _upsert(connection, {**values, "consecutive_failures": 0}, values)


def record_success(
    loop: str,
    summary: dict[str, Any],
    hostname: str | None,
    task_id: str | None,
    engine: Engine | None = None,
) -> None:
    """Record a successful iteration: last success now, failures reset to zero."""
    with _connection(engine) as connection:
        now = database_now_expression(connection.dialect.name)
        values = {
            "loop_name": loop,
            "last_finished_at": now,
            "last_success_at": now,
            "last_success_hostname": hostname,
            "last_success_summary": summary,
            "consecutive_failures": 0,
            "running_task_id": None,
        }
        _upsert(connection, values, _finish_updates(values, task_id))


def record_failure(
    loop: str,
    error: BaseException,
    summary: dict[str, Any] | None,
    task_id: str | None,
    engine: Engine | None = None,
) -> None:
    """Record a failed iteration; ``last_success_at`` is left as it was."""
    with _connection(engine) as connection:
        now = database_now_expression(connection.dialect.name)
        message = describe_error(error)
        values = {
            "loop_name": loop,
            "last_finished_at": now,
            "last_failure_at": now,
            "last_error_class": type(error).__name__,
            "last_error_message": message,
            "last_failure_summary": summary,
            "consecutive_failures": 1,
            "running_task_id": None,
        }
        updates = _finish_updates(values, task_id)
        updates["consecutive_failures"] = _TABLE.c.consecutive_failures + 1
        _upsert(connection, values, updates)


def _finish_updates(values: dict[str, Any], task_id: str | None) -> dict[str, Any]:
    """Return the update for a finished iteration.

    ``running_task_id`` is cleared only if it still names this iteration, so an
    overlapping iteration that started later stays visible as running.
    """
    updates = {key: value for key, value in values.items() if key != "loop_name"}
    running = _TABLE.c.running_task_id
    if task_id is None:
        updates.pop("running_task_id")
    else:
        updates["running_task_id"] = case((running == task_id, None), else_=running)
    return updates


def load_loop_records(session: Session, loops: list[str] | None = None) -> dict[str, LoopHealth]:
    """Return the stored records by loop name, all of them or only ``loops``."""
    query = select(LoopHealth)
    if loops is not None:
        query = query.where(LoopHealth.loop_name.in_(loops))
    return {record.loop_name: record for record in session.scalars(query)}
