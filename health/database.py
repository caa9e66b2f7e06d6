"""A plain DB-API connection for the health probes: psycopg or sqlite3, no SQLAlchemy.

The probes run in short-lived processes where importing SQLAlchemy (about
0.25 s) would dominate the run time, so they send plain SQL through the driver.
Queries are written with ``?`` placeholders and rewritten for psycopg.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from app.redaction import redact

#: Seconds a SQLite reader or writer waits for another writer's lock.
SQLITE_BUSY_TIMEOUT_SECONDS = 5
#: libpq ignores a connect timeout below 2 seconds.
POSTGRES_MIN_CONNECT_TIMEOUT_SECONDS = 2
#: Milliseconds the server-side statement timeout exceeds the probe's own timeout.
POSTGRES_STATEMENT_TIMEOUT_MARGIN_MS = 500


class DatabaseUnavailable(Exception):
    """The database could not be reached or queried; the message names the cause."""


class HealthDatabase:
    """One connection in autocommit mode, with the dialect's SQL differences in one place."""

    def __init__(self, connection: Any, dialect: str) -> None:
        self.connection = connection
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement and return the number of rows it changed."""
        cursor = self.connection.cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def now(self) -> datetime:
        """Return the database server's current time as aware UTC."""
        if self.dialect == "postgresql":
            raw = self.fetch_all("SELECT clock_timestamp()")[0][0]
        else:
            raw = self.fetch_all("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")[0][0]
        now = to_utc(raw)
        if now is None:
            raise DatabaseUnavailable("the database returned no current time")
        return now

    def bind_time(self, value: datetime) -> Any:
        """Return ``value`` as the driver stores it: aware on PostgreSQL, naive UTC text on SQLite.

        The SQLite text has the layout SQLAlchemy writes, so both read the same rows.
        """
        if self.dialect == "postgresql":
            return value
        return (
            value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        )

    def json_parameter(self) -> str:
        """Return the placeholder for a JSON value written as text."""
        return "CAST(? AS json)" if self.dialect == "postgresql" else "?"

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> HealthDatabase:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def to_utc(value: Any) -> datetime | None:
    """Return a stored time as aware UTC; SQLite stores naive UTC text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def from_json(value: Any) -> Any:
    """Return a JSON column's value; psycopg decodes it, sqlite3 returns the text."""
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


def connect(database_url: str, timeout_seconds: float) -> HealthDatabase:
    """Open ``database_url`` (the DATABASE_URL forms of app.settings).

    Raises DatabaseUnavailable with a one-line, password-free cause.
    """
    scheme, _, rest = database_url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _connect_sqlite(rest)
    return _connect_postgres("postgresql://" + rest, timeout_seconds)


def _connect_sqlite(rest: str) -> HealthDatabase:
    # sqlite:///relative/path and sqlite:////absolute/path, as in SQLAlchemy.
    path = rest[1:] if rest.startswith("/") else rest
    if not path or path == ":memory:":
        raise DatabaseUnavailable("an in-memory SQLite database cannot be probed from outside")
    if not Path(path).exists():
        raise DatabaseUnavailable(f"database unreachable: SQLite file {path} does not exist")
    try:
        connection = sqlite3.connect(
            f"file:{quote(path)}?mode=rw",
            uri=True,
            timeout=SQLITE_BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"database unreachable: SQLite file {path}: {exc}") from None
    return HealthDatabase(connection, "sqlite")


def _connect_postgres(conninfo: str, timeout_seconds: float) -> HealthDatabase:
    import psycopg

    connect_timeout = max(POSTGRES_MIN_CONNECT_TIMEOUT_SECONDS, math.ceil(timeout_seconds))
    # The caller's watchdog ends the process at the timeout. The server-side limit,
    # a little later, stops a statement that the ended probe left waiting on a lock.
    statement_timeout_ms = int(timeout_seconds * 1000) + POSTGRES_STATEMENT_TIMEOUT_MARGIN_MS
    try:
        connection = psycopg.connect(
            conninfo,
            autocommit=True,
            connect_timeout=connect_timeout,
            application_name="settlement-health",
            options=f"-c statement_timeout={statement_timeout_ms}",
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"database unreachable: {first_line(exc)}") from None
    return HealthDatabase(connection, "postgresql")


def first_line(exc: BaseException) -> str:
    """Return the first line of ``exc``'s message with passwords removed."""
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


def database_errors() -> tuple[type[BaseException], ...]:
    """Return the driver exception classes a query can raise, without importing psycopg."""
    import sys

    errors: list[type[BaseException]] = [sqlite3.Error]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors.append(psycopg.Error)
    return tuple(errors)


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """Return DatabaseUnavailable and the driver errors: everything that means "cannot read"."""
    return (DatabaseUnavailable, *database_errors())


def probe_errors(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    """Return ``extra`` plus :func:`unavailable_errors`, for one ``except`` clause."""
    return (*extra, *unavailable_errors())
