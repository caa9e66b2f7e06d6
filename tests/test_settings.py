"""Settings: defaults, and one documented line per invalid variable with passwords masked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import EXIT_CONFIG_ERROR, ConfigurationError, load_settings, mask_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Variable, bad value, the exact line printed. Passwords appear only as ***.
INVALID_VARIABLES = [
    (
        "DATABASE_URL",
        "mysql://svc:hunter2@db:3306/wallet",
        "configuration error: DATABASE_URL='mysql://svc:***@db:3306/wallet' is invalid: "
        "expected postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH",
    ),
    (
        "BROKER_URL",
        "kafka://svc:hunter2@broker:9092",
        "configuration error: BROKER_URL='kafka://svc:***@broker:9092' is invalid: expected "
        "redis://[:PASSWORD@]HOST:PORT/DB, amqp://USER:PASSWORD@HOST:PORT/VHOST or filesystem://",
    ),
    (
        "RESULT_BACKEND",
        "mongodb://svc:hunter2@mongo/results",
        "configuration error: RESULT_BACKEND='mongodb://svc:***@mongo/results' is invalid: "
        "expected redis://HOST:PORT/DB, db+postgresql+psycopg://..., db+sqlite:///PATH or disabled",
    ),
    (
        "BUSINESS_TIMEZONE",
        "Mars/Olympus",
        "configuration error: BUSINESS_TIMEZONE='Mars/Olympus' is invalid: "
        "expected an IANA time zone name such as Asia/Manila",
    ),
    (
        "OUTBOX_BATCH_SIZE",
        "0",
        "configuration error: OUTBOX_BATCH_SIZE='0' is invalid: "
        "expected a whole number from 1 to 100000",
    ),
    (
        "OUTBOX_POLL_INTERVAL_SECONDS",
        "soon",
        "configuration error: OUTBOX_POLL_INTERVAL_SECONDS='soon' is invalid: "
        "expected a number of seconds greater than 0",
    ),
    (
        "OUTBOX_MAX_AGE_SECONDS",
        "-5",
        "configuration error: OUTBOX_MAX_AGE_SECONDS='-5' is invalid: "
        "expected a number of seconds greater than 0",
    ),
    (
        "LOG_FORMAT",
        "xml",
        "configuration error: LOG_FORMAT='xml' is invalid: expected text or json",
    ),
    (
        "LOSSBACK_PERIOD",
        "monthly",
        "configuration error: LOSSBACK_PERIOD='monthly' is invalid: expected daily or weekly",
    ),
]


def test_defaults_are_embedded() -> None:
    settings = load_settings({})

    assert settings.database_url == "sqlite:///var/settlement.sqlite"
    assert settings.broker_url == "filesystem://"
    assert settings.is_embedded is True
    assert settings.business_timezone == "UTC"


def test_postgresql_url_gets_psycopg_driver() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://svc:pw@db:5432/wallet"})

    assert settings.sqlalchemy_database_url == "postgresql+psycopg://svc:pw@db:5432/wallet"


@pytest.mark.parametrize(("variable", "value", "line"), INVALID_VARIABLES)
def test_invalid_variable_message(variable: str, value: str, line: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({variable: value})

    assert str(caught.value) == line
    assert caught.value.variable == variable
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("amqp://guest:hunter2@mq:5672//", "amqp://guest:***@mq:5672//"),
        ("postgresql+psycopg://svc@db/wallet", "postgresql+psycopg://svc@db/wallet"),
        ("filesystem://", "filesystem://"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def _run_with(variable: str, value: str, *command: str) -> subprocess.CompletedProcess[str]:
    env = {key: item for key, item in os.environ.items() if key not in ("PYTHONPATH",)}
    env[variable] = value
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("variable", "value", "line"), INVALID_VARIABLES)
def test_migrate_rejects_invalid_variable(variable: str, value: str, line: str) -> None:
    completed = _run_with(variable, value, sys.executable, "-m", "app.migrate")

    assert completed.returncode == EXIT_CONFIG_ERROR
    assert completed.stderr == line + "\n"
    assert completed.stdout == ""


@pytest.mark.parametrize(
    ("variable", "value", "line"), [INVALID_VARIABLES[0], INVALID_VARIABLES[1]]
)
def test_worker_rejects_invalid_variable(variable: str, value: str, line: str) -> None:
    celery = str(Path(sys.executable).parent / "celery")

    completed = _run_with(variable, value, celery, "-A", "app", "worker")

    assert completed.returncode == EXIT_CONFIG_ERROR
    assert completed.stderr == line + "\n"
    assert "Traceback" not in completed.stdout
