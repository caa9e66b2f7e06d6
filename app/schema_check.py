"""Start-up check that the database is reachable and at the latest Alembic revision.

A worker or beat started against a database without migrations would run,
fail every task on a missing table, and report it only in its logs. This check
stops it at start-up instead, with one line on stderr and a documented exit
status:

* EXIT_CONFIG_ERROR (78, sysexits EX_CONFIG): the schema is missing or not at
  the latest revision; run ``python -m app.migrate``;
* EXIT_DATABASE_UNAVAILABLE (69, sysexits EX_UNAVAILABLE): the database could
  not be reached or queried.
"""

from __future__ import annotations

import logging
import sys

from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.db import create_database_engine
from app.redaction import redact
from app.settings import EXIT_CONFIG_ERROR, Settings, mask_url

logger = logging.getLogger(__name__)

#: Exit status of worker and beat when the database cannot be reached (sysexits EX_UNAVAILABLE).
EXIT_DATABASE_UNAVAILABLE = 69
#: Table in which Alembic stores the database's revision.
VERSION_TABLE = "alembic_version"


class SchemaNotCurrent(Exception):
    """The database has no schema, or one older or newer than this code's latest revision."""


class DatabaseUnreachable(Exception):
    """The database could not be connected to or queried."""


def head_revision() -> str:
    """Return the latest revision of the project's migrations."""
    # Importing alembic's scripts sets up its plugins, which log one INFO line each.
    plugins_logger = logging.getLogger("alembic.runtime.plugins")
    saved_level = plugins_logger.level
    plugins_logger.setLevel(logging.WARNING)
    try:
        from alembic.script import ScriptDirectory

        from app.migrate import alembic_config

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    finally:
        plugins_logger.setLevel(saved_level)
    if head is None:
        raise RuntimeError("the migrations folder has no revision")
    return head


def _first_line(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return redact(lines[0] if lines else type(cause).__name__)


def _current_revision(connection: Connection) -> str | None:
    # Read directly rather than through alembic's MigrationContext, which logs at INFO.
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    query = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608  (a constant name)
    return connection.execute(query).scalar()


def check_schema(settings: Settings) -> str:
    """Return the database's revision; raise when it is not the latest one.

    Raises DatabaseUnreachable or SchemaNotCurrent, each with a one-line message.
    """
    shown_url = mask_url(settings.database_url)
    engine = create_database_engine(settings.sqlalchemy_database_url)
    try:
        with engine.connect() as connection:
            current = _current_revision(connection)
    except SQLAlchemyError as exc:
        raise DatabaseUnreachable(
            f"database {shown_url} is unreachable: {_first_line(exc)}"
        ) from None
    finally:
        engine.dispose()

    head = head_revision()
    if current is None:
        raise SchemaNotCurrent(
            f"database {shown_url} has no schema: run 'python -m app.migrate' (make migrate)"
        )
    if current != head:
        raise SchemaNotCurrent(
            f"database {shown_url} is at schema revision {current}, expected {head}: "
            "run 'python -m app.migrate' (make migrate)"
        )
    return current


def schema_or_exit(settings: Settings, process: str) -> None:
    """Run :func:`check_schema`; on failure print one line to stderr and exit."""
    try:
        revision = check_schema(settings)
    except SchemaNotCurrent as exc:
        print(f"{process}: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except DatabaseUnreachable as exc:
        print(f"{process}: cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_DATABASE_UNAVAILABLE) from None
    logger.info("%s: database schema is at the latest revision %s", process, revision)
