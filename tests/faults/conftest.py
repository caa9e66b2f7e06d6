"""Fixtures of the fault tests: private servers, password-carrying URLs and the output log.

Every URL here carries a password. The test PostgreSQL server uses trust
authentication, so its password is never checked, but it is still in the URL.
Every line the suite's processes and loggers write is kept, so the secrets
test can show that no password leaked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.logs import TEXT_FORMAT, ContextFilter, RedactingTextFormatter
from tests.conftest import point_settings_at
from tests.faults.servers import OutputLog, PrivateRedis, TcpProxy

REDIS_PASSWORD = "redisFaultSecret7Q"
POSTGRES_PASSWORD = "pgFaultSecret4Z"
SECRETS = (REDIS_PASSWORD, POSTGRES_PASSWORD)

#: Environment variables a test may change; each is restored after the test.
TOUCHED_VARIABLES = (
    "DATABASE_URL",
    "BROKER_URL",
    "RESULT_BACKEND",
    "OUTBOX_BATCH_SIZE",
    "OUTBOX_MAX_AGE_SECONDS",
    "OUTBOX_MAX_ATTEMPTS",
    "OUTBOX_MAX_PAYLOAD_BYTES",
    "OUTBOX_POLL_INTERVAL_SECONDS",
    "OUTBOX_DESTINATIONS",
    "HEARTBEAT_INTERVAL_SECONDS",
    "STARTUP_GRACE_SECONDS",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the secrets search after every other fault test, so its search includes their output."""
    last = [item for item in items if item.get_closest_marker("searches_all_output")]
    others = [item for item in items if not item.get_closest_marker("searches_all_output")]
    items[:] = others + last


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "searches_all_output: runs after the other tests and reads their output"
    )


@pytest.fixture(scope="session")
def output_log(tmp_path_factory: pytest.TempPathFactory) -> OutputLog:
    return OutputLog(tmp_path_factory.mktemp("faults-output"))


@pytest.fixture(autouse=True)
def _keep_log_lines(output_log: OutputLog, request: pytest.FixtureRequest) -> Iterator[None]:
    """Write this test's log records, formatted as the processes format them, to the output log."""
    path = output_log.new_file(f"logs-{request.node.name}")
    handler = logging.FileHandler(path)
    handler.addFilter(ContextFilter())
    handler.setFormatter(RedactingTextFormatter(TEXT_FORMAT))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(saved_level)
    handler.close()


@pytest.fixture(autouse=True)
def _restore_variables() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in TOUCHED_VARIABLES}
    yield
    point_settings_at(**saved)


def with_password(url: str, password: str = POSTGRES_PASSWORD) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.fixture
def fault_db(pg_database_url: str) -> str:
    """The emptied, migrated PostgreSQL test database, its URL carrying a password."""
    url = with_password(pg_database_url)
    point_settings_at(DATABASE_URL=url)
    return url


@pytest.fixture
def private_redis(output_log: OutputLog) -> Iterator[PrivateRedis]:
    server = PrivateRedis(output_log, REDIS_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_proxy(pg_database_url: str) -> Iterator[TcpProxy]:
    """A proxy in front of the test PostgreSQL server; DATABASE_URL goes through it."""
    url = make_url(pg_database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    point_settings_at(
        DATABASE_URL=url.set(port=proxy.port, password=POSTGRES_PASSWORD).render_as_string(
            hide_password=False
        )
    )
    yield proxy
    proxy.close()


def process_env(**variables: str) -> dict[str, str]:
    """Return the current environment plus ``variables``, for a worker or CLI subprocess."""
    env = dict(os.environ)
    env.update(variables)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.pop("CELERY_CONFIG_MODULE", None)
    return env
