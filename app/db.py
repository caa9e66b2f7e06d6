"""SQLAlchemy engine, the declarative base, and the one transaction helper.

Domain code opens its sessions through :func:`transaction`, so commit and
rollback happen in one place. The health probes and the bulk data loader use
plain connections instead, for start-up time and speed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Engine, MetaData, create_engine, event, func, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from app.settings import get_settings

#: Seconds a SQLite writer waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_SECONDS = 30
#: Seconds a PostgreSQL connection attempt may take.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamp on every backend.

    SQLite has no time zone type, so values are stored as naive UTC there and
    made aware again on load. Naive datetimes are rejected on bind.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given where UTC is required")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _configure_sqlite(engine: Engine) -> None:
    """Use WAL and BEGIN IMMEDIATE so concurrent writers queue instead of deadlocking.

    pysqlite's own transaction handling is switched off so that SQLAlchemy's
    ``begin`` event decides how a transaction starts.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_database_engine(url: str) -> Engine:
    """Create an engine for ``url``; a SQLite file's directory is created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        _configure_sqlite(engine)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS},
    )
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    """Set each connection's time zone to UTC.

    Timestamps then load as UTC datetimes that need no conversion, and text
    the server formats from a timestamp is in UTC whatever the server's default.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
        # Committed, so the pool's rollback on check-in does not undo it.
        dbapi_connection.commit()


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine() -> Engine:
    """Return the process-wide engine for DATABASE_URL, created on first use."""
    url = get_settings().sqlalchemy_database_url
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_database_engine(url)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Drop pooled connections, for example in a worker process after fork."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()


@contextmanager
def transaction(engine: Engine | None = None) -> Iterator[Session]:
    """Yield a session inside one transaction: commit on normal exit, roll back on error."""
    with Session(engine or get_engine(), expire_on_commit=False) as session, session.begin():
        yield session


def database_now_expression(dialect_name: str) -> ColumnElement[Any]:
    """Return a SQL expression for the database server's current time.

    Writes that only store "now" use it inline, which saves the round trip of
    :func:`database_now`. On SQLite the text matches how UtcDateTime stores
    naive UTC.
    """
    if dialect_name == "postgresql":
        return func.clock_timestamp()
    return func.strftime("%Y-%m-%d %H:%M:%f", "now")


def database_now(session: Session) -> datetime:
    """Return the database server's current time as aware UTC.

    Freshness and heartbeat times come from here so that hosts with skewed
    clocks still agree.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        value = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value.astimezone(UTC)
    raw = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return datetime.fromisoformat(raw).replace(tzinfo=UTC)
