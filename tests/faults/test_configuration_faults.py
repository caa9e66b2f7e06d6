"""Configuration mistakes stop worker, beat and the health CLI with one line and a known status."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.broker_check import EXIT_BROKER_UNAVAILABLE
from app.schema_check import EXIT_DATABASE_UNAVAILABLE
from app.settings import EXIT_CONFIG_ERROR
from tests.conftest import POSTGRES_ADMIN_URL, require_service
from tests.faults.conftest import POSTGRES_PASSWORD, REDIS_PASSWORD, process_env
from tests.faults.servers import (
    OutputLog,
    celery_command,
    python_module,
    run_command,
)

pytestmark = [pytest.mark.faults]

#: Exit status of ``python -m health check|live`` when it cannot tell.
HEALTH_EXIT_UNKNOWN = 2


@pytest.fixture
def unmigrated_db() -> Iterator[str]:
    """An empty PostgreSQL database with no schema, its URL carrying a password."""
    require_service("PostgreSQL", POSTGRES_ADMIN_URL)
    name = f"sw_faults_empty_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name, password=POSTGRES_PASSWORD)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def worker_args(tmp_path: Path) -> list[str]:
    return celery_command(
        "-A", "app", "worker", "--pool", "solo", "--without-gossip", "--without-mingle"
    )


def beat_args(tmp_path: Path) -> list[str]:
    return celery_command("-A", "app", "beat", "--schedule", str(tmp_path / "beat-schedule"))


def error_lines(stderr: str) -> list[str]:
    """Return the stderr lines that report an error, leaving out Celery's root-user warning."""
    return [
        line
        for line in stderr.splitlines()
        if "error" in line.lower() or "cannot" in line.lower() or "unreachable" in line.lower()
    ]


def assert_one_line_error(output: str, expected_status: int, status: int, fragment: str) -> None:
    assert status == expected_status, output
    assert "Traceback" not in output
    lines = error_lines(output)
    assert len(lines) == 1, lines
    assert fragment in lines[0]
    assert POSTGRES_PASSWORD not in output
    assert REDIS_PASSWORD not in output


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        (
            "DATABASE_URL",
            f"mysql://root:{POSTGRES_PASSWORD}@127.0.0.1/settlement",
            "configuration error: DATABASE_URL='mysql://root:***@127.0.0.1/settlement' is invalid",
        ),
        (
            "BROKER_URL",
            f"http://user:{REDIS_PASSWORD}@127.0.0.1:6379/0",
            "configuration error: BROKER_URL='http://user:***@127.0.0.1:6379/0' is invalid",
        ),
    ],
    ids=["database_url", "broker_url"],
)
@pytest.mark.parametrize("program", ["worker", "beat"])
def test_wrong_scheme_stops_program(
    program: str, variable: str, value: str, fragment: str, output_log: OutputLog, tmp_path: Path
) -> None:
    args = worker_args(tmp_path) if program == "worker" else beat_args(tmp_path)

    result = run_command(args, process_env(**{variable: value}), output_log, f"{program}-scheme")

    assert_one_line_error(result.stderr, EXIT_CONFIG_ERROR, result.returncode, fragment)
    assert result.stdout == ""


@pytest.mark.postgres
@pytest.mark.parametrize("program", ["worker", "beat"])
def test_database_without_migrations_stops_program(
    program: str, unmigrated_db: str, output_log: OutputLog, tmp_path: Path
) -> None:
    args = worker_args(tmp_path) if program == "worker" else beat_args(tmp_path)
    env = process_env(DATABASE_URL=unmigrated_db, BROKER_URL="filesystem://")

    result = run_command(args, env, output_log, f"{program}-unmigrated")

    assert_one_line_error(
        result.stderr,
        EXIT_CONFIG_ERROR,
        result.returncode,
        f"{program}: configuration error: database postgresql+psycopg://root:***@",
    )
    assert "has no schema: run 'python -m app.migrate'" in result.stderr


@pytest.mark.parametrize("program", ["worker", "beat"])
def test_database_closed_port_stops_program(
    program: str, closed_port: int, output_log: OutputLog, tmp_path: Path
) -> None:
    args = worker_args(tmp_path) if program == "worker" else beat_args(tmp_path)
    url = f"postgresql+psycopg://root:{POSTGRES_PASSWORD}@127.0.0.1:{closed_port}/settlement"

    result = run_command(args, process_env(DATABASE_URL=url), output_log, f"{program}-closed")

    assert_one_line_error(
        result.stderr,
        EXIT_DATABASE_UNAVAILABLE,
        result.returncode,
        f"{program}: cannot start: database postgresql+psycopg://root:***@127.0.0.1:{closed_port}",
    )
    assert "Connection refused" in result.stderr


@pytest.mark.parametrize("command", ["check", "live"])
@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("scheme", "health: cannot tell: configuration error: DATABASE_URL="),
        ("closed_port", "health: cannot tell: database unreachable: connection failed"),
    ],
)
def test_health_cli_cannot_tell(
    command: str, case: str, fragment: str, closed_port: int, output_log: OutputLog
) -> None:
    if case == "scheme":
        url = f"mysql://root:{POSTGRES_PASSWORD}@127.0.0.1/settlement"
    else:
        url = f"postgresql+psycopg://root:{POSTGRES_PASSWORD}@127.0.0.1:{closed_port}/settlement"

    result = run_command(
        python_module("health", command), process_env(DATABASE_URL=url), output_log, "health"
    )

    assert_one_line_error(result.stderr, HEALTH_EXIT_UNKNOWN, result.returncode, fragment)
    assert result.stdout == ""


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["check", "live"])
def test_health_cli_database_without_migrations(
    command: str, unmigrated_db: str, output_log: OutputLog
) -> None:
    result = run_command(
        python_module("health", command),
        process_env(DATABASE_URL=unmigrated_db),
        output_log,
        "health-unmigrated",
    )

    assert_one_line_error(
        result.stderr,
        HEALTH_EXIT_UNKNOWN,
        result.returncode,
        "health: cannot tell: database query failed (are migrations applied?)",
    )


@pytest.mark.postgres
@pytest.mark.parametrize("program", ["worker", "beat"])
def test_broker_closed_port_stops_program(
    program: str, fault_db: str, closed_port: int, output_log: OutputLog, tmp_path: Path
) -> None:
    args = worker_args(tmp_path) if program == "worker" else beat_args(tmp_path)
    broker_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed_port}/0"

    result = run_command(
        args,
        process_env(BROKER_URL=broker_url, RESULT_BACKEND="disabled"),
        output_log,
        f"{program}-broker-closed",
    )

    assert_one_line_error(
        result.stderr,
        EXIT_BROKER_UNAVAILABLE,
        result.returncode,
        f"{program}: cannot start: broker redis://:***@127.0.0.1:{closed_port}/0 is unreachable"
        " after 3 attempts",
    )
    assert "Connection refused" in result.stderr
