"""Operator CLI of the outbox: ``python -m outbox status|publish|requeue|discard``.

Exit status: 0 on success, 1 when a publish run failed or an action was
rejected, 2 when the database could not be reached, 78 on a configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.db import transaction
from app.logs import configure_logging
from app.operator import operator_name
from app.redaction import describe_error
from app.settings import settings_or_exit
from outbox.models import OUTBOX_MODELS
from outbox.operations import (
    OperatorActionRejected,
    StreamStatus,
    apply_operator_action,
    stream_status,
)

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2

STREAMS = tuple(OUTBOX_MODELS)


def _event_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid event id {text!r}: expected a UUID") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m outbox", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="backlog, oldest unpublished age and parked rows")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--stream", choices=STREAMS, help="show only this stream")

    publish = commands.add_parser(
        "publish", help="run one stream's poller task in this process, as the worker would"
    )
    publish.add_argument("--stream", choices=STREAMS, required=True)
    publish.add_argument(
        "--once", action="store_true", required=True, help="run one drain and exit (required)"
    )

    for action in ("requeue", "discard"):
        command = commands.add_parser(action, help=f"{action} parked rows by event id")
        command.add_argument(
            "--event-id",
            dest="event_ids",
            type=_event_id,
            action="append",
            required=True,
            help="event id (UUID) of a parked row; repeat for several rows",
        )
        command.add_argument("--reason", required=True, help="why, stored in the audit row")
        command.add_argument(
            "--actor", help="who is acting, stored in the audit row (default: $USER)"
        )
        command.add_argument("--stream", choices=STREAMS, help="look only in this stream")
    return parser


def _format_age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


def _print_status_table(statuses: Sequence[StreamStatus]) -> None:
    print(f"{'STREAM':<10} {'BACKLOG':>8} {'OLDEST UNPUBLISHED':>19} {'PARKED':>7}")
    for status in statuses:
        age = _format_age(status.oldest_unpublished_age_seconds)
        print(f"{status.stream:<10} {status.backlog:>8} {age:>19} {status.parked:>7}")

    for status in statuses:
        for row in status.parked_rows:
            print(
                f"parked {status.stream} event {row.event_id} aggregate {row.aggregate_type}"
                f" {row.aggregate_id} type {row.event_type} attempts {row.attempts}:"
                f" {row.last_error}"
            )


def run_status(args: argparse.Namespace) -> int:
    streams = [args.stream] if args.stream else list(STREAMS)
    with transaction() as session:
        statuses = [stream_status(session, stream) for stream in streams]

    if args.json:
        print(json.dumps({"streams": [status.as_dict() for status in statuses]}, indent=2))
    else:
        _print_status_table(statuses)
    return EXIT_OK


def run_publish(args: argparse.Namespace) -> int:
    # The poller runs as the Celery task itself (eagerly, in this process), so it
    # has the worker's failure semantics and records loop freshness the same way.
    # Celery is imported here only, so the other commands do not load it.
    from app.celery_app import celery
    from tasks.outbox import OUTBOX_TASKS

    task = celery.tasks[OUTBOX_TASKS[args.stream].name]
    result = task.apply()
    if result.successful():
        print(json.dumps(result.result, indent=2, default=str))
        return EXIT_OK

    error = result.result
    summary = getattr(error, "summary", None)
    print(f"publish of stream {args.stream} failed: {error}", file=sys.stderr)
    if summary:
        print(json.dumps(summary, indent=2, default=str), file=sys.stderr)
    return EXIT_FAILED


def run_operator_action(args: argparse.Namespace) -> int:
    try:
        with transaction() as session:
            changed = apply_operator_action(
                session,
                args.command,
                args.event_ids,
                reason=args.reason,
                actor=operator_name(args.actor),
                stream=args.stream,
            )
    except OperatorActionRejected as exc:
        print(f"{args.command} rejected, nothing changed: {exc}", file=sys.stderr)
        return EXIT_FAILED

    for stream, event_id in changed:
        print(f"{args.command} {stream} {event_id}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)

    handlers: dict[str, Any] = {
        "status": run_status,
        "publish": run_publish,
        "requeue": run_operator_action,
        "discard": run_operator_action,
    }
    try:
        return int(handlers[args.command](args))
    except SQLAlchemyError as exc:
        print(f"database unavailable: {describe_error(exc)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
