"""Helpers for health tests: a plain connection, CLI runs, and loop tasks that record freshness."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from health.database import HealthDatabase, connect

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Seconds a CLI subprocess may take in a test before the test fails.
CLI_RUN_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class CliRun:
    exit_code: int
    stdout: str
    stderr: str
    wall_seconds: float


def run_health(*args: str, env: dict[str, str] | None = None) -> CliRun:
    """Run ``python -m health ARGS`` in a subprocess with the test's environment plus ``env``."""
    environ = {**os.environ, **(env or {})}
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "health", *args],
        cwd=PROJECT_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=CLI_RUN_TIMEOUT_SECONDS,
        check=False,
    )
    wall_seconds = time.monotonic() - started
    return CliRun(completed.returncode, completed.stdout, completed.stderr, wall_seconds)


@pytest.fixture
def health_db(database_url: str) -> Iterator[HealthDatabase]:
    """A plain connection to the test database (SQLite and PostgreSQL)."""
    db = connect(database_url, timeout_seconds=5)
    yield db
    db.close()


@pytest.fixture
def pg_health_db(pg_database_url: str) -> Iterator[HealthDatabase]:
    db = connect(pg_database_url, timeout_seconds=5)
    yield db
    db.close()
