"""The one migration chain runs up, down and up again, and matches the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from app import migrate
from app.db import create_database_engine
from app.schema import metadata
from tests.conftest import POSTGRES_ADMIN_URL, require_service

EXPECTED_TABLES = {
    "agent_outbox",
    "alembic_version",
    "bets",
    "currencies",
    "loop_health",
    "outbox_operator_actions",
    "players",
    "promotion_rates",
    "promotion_terms",
    "rolling_outbox",
    "settlement_items",
    "settlement_runs",
    "wallet_ledger",
    "wallet_outbox",
    "wallets",
    "worker_heartbeats",
}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """An empty database with no tables, dropped afterwards on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/migrations.sqlite"
        return

    require_service("PostgreSQL", POSTGRES_ADMIN_URL)
    name = f"sw_migrations_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def table_names(url: str) -> set[str]:
    engine = create_database_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[object]:
    engine = create_database_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    assert table_names(empty_database) == EXPECTED_TABLES

    migrate.downgrade(empty_database)
    assert table_names(empty_database) == {"alembic_version"}

    migrate.upgrade(empty_database)
    assert table_names(empty_database) == EXPECTED_TABLES


def test_models_match_migrations(empty_database: str) -> None:
    migrate.upgrade(empty_database)

    assert schema_differences(empty_database) == []
