"""Shared fixtures: real PostgreSQL, Redis and RabbitMQ, and the embedded SQLite default.

Servers come from TEST_POSTGRES_URL, TEST_REDIS_URL and TEST_RABBITMQ_URL
(defaults: the local servers on 127.0.0.1). A test that needs a server which
is not reachable is skipped, except with CI=true, where it fails.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from app import db as app_db
from app import migrate
from app.db import transaction
from app.schema import metadata
from app.settings import get_settings
from health.models import LoopHealth

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/postgres"
)
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

IN_CI = os.environ.get("CI", "").lower() == "true"
#: Seconds a reachability probe of a test server may take.
SERVICE_PROBE_TIMEOUT_SECONDS = 3


def require_service(name: str, url: str) -> None:
    """Skip the test when ``url``'s server is not reachable, or fail it under CI=true."""
    parts = urlsplit(url.replace("+psycopg", ""))
    host = parts.hostname or "127.0.0.1"
    port = parts.port or {"postgresql": 5432, "redis": 6379, "amqp": 5672}.get(parts.scheme, 0)
    try:
        with socket.create_connection((host, port), timeout=SERVICE_PROBE_TIMEOUT_SECONDS):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port}: {exc}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def point_settings_at(**variables: str | None) -> None:
    """Set (or, for None, unset) environment variables and drop cached settings and engines."""
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    get_settings.cache_clear()
    app_db.dispose_engines()


@pytest.fixture(autouse=True, scope="session")
def _embedded_defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Give the whole session a private VAR_DIR and SQLite database, never ./var."""
    var_dir = tmp_path_factory.mktemp("var")
    saved = dict(os.environ)
    point_settings_at(
        VAR_DIR=str(var_dir),
        DATABASE_URL=f"sqlite:///{var_dir}/settlement.sqlite",
        BROKER_URL="filesystem://",
        RESULT_BACKEND=f"db+sqlite:///{var_dir}/results.sqlite",
    )
    yield
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
    app_db.dispose_engines()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session, dropped at the end."""
    require_service("PostgreSQL", POSTGRES_ADMIN_URL)
    name = f"sw_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    app_db.dispose_engines()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database file for this session."""
    path = tmp_path_factory.mktemp("sqlite") / "settlement.sqlite"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    return url


def _truncate_all(url: str) -> None:
    engine = app_db.create_database_engine(url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
                connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(metadata.sorted_tables):
                    connection.execute(table.delete())
    finally:
        engine.dispose()


def _emptied_and_current(url: str) -> Iterator[str]:
    """Empty every table at ``url`` and point DATABASE_URL at it until the test ends."""
    _truncate_all(url)
    saved = os.environ.get("DATABASE_URL")
    point_settings_at(DATABASE_URL=url)
    yield url
    point_settings_at(DATABASE_URL=saved)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test runs once on SQLite and once on PostgreSQL, on emptied tables.

    DATABASE_URL points at the database for the test, so code under test that
    calls ``get_engine()`` uses it.
    """
    yield from _emptied_and_current(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def pg_database_url(postgres_url: str) -> Iterator[str]:
    """PostgreSQL only, on emptied tables, with DATABASE_URL pointing at it."""
    yield from _emptied_and_current(postgres_url)


@pytest.fixture
def sqlite_database_url(sqlite_url: str) -> Iterator[str]:
    """SQLite only, on emptied tables, with DATABASE_URL pointing at it."""
    yield from _emptied_and_current(sqlite_url)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database for this session, emptied at the start.

    The database number comes from the process id, so two local test runs at
    once rarely share one.
    """
    require_service("Redis", REDIS_BASE_URL)
    import redis

    url = f"{REDIS_BASE_URL.rstrip('/')}/{os.getpid() % 15 + 1}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    require_service("RabbitMQ", RABBITMQ_URL)
    return RABBITMQ_URL


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def loop_record(loop: str) -> LoopHealth | None:
    """Return the freshness record of ``loop``, or None when it has none yet."""
    with transaction() as session:
        return session.scalar(select(LoopHealth).where(LoopHealth.loop_name == loop))
