"""``python -m health``: readiness (check), liveness (live) and the probe HTTP server (serve).

Exit status of check and live: 0 ready or alive, 1 not ready or not alive,
2 when the probe cannot tell (bad configuration, database unreachable,
timeout), with one line on stderr that names the cause.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any, TextIO

from health.config import HealthConfigError, load_health_config
from health.database import DatabaseUnavailable, database_errors, first_line
from health.probes import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNKNOWN,
    CheckResult,
    LiveResult,
    ProbeUnknown,
    check_liveness,
    check_readiness,
    open_database,
)

#: Seconds check and live may take before they exit with status 2.
DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_SERVE_HOST = "127.0.0.1"
DEFAULT_SERVE_PORT = 9108


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m health", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="readiness: are the critical loops fresh?")
    check.add_argument(
        "--loop",
        action="append",
        dest="loops",
        metavar="NAME",
        help="evaluate only this loop (repeatable); default: every critical loop",
    )
    check.add_argument(
        "--worker",
        metavar="HOSTNAME",
        help="evaluate the loops on this worker's queues, with its start-up grace",
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_timeout(check)

    live = commands.add_parser("live", help="liveness: does the worker's heartbeat timer tick?")
    live.add_argument(
        "--worker", metavar="HOSTNAME", help="worker to check; default: the most recently ticked"
    )
    live.add_argument("--json", action="store_true", help="print JSON instead of a line")
    _add_timeout(live)

    serve = commands.add_parser("serve", help="HTTP server with /livez, /readyz and /metrics")
    serve.add_argument(
        "--host", default=DEFAULT_SERVE_HOST, help="bind address (default %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_SERVE_PORT, help="TCP port (default %(default)s)"
    )
    serve.add_argument("--worker", metavar="HOSTNAME", help="worker that /livez and /readyz check")
    _add_timeout(serve)
    return parser


def _add_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="seconds after which the probe gives up with exit status 2 (default %(default)s)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.timeout <= 0:
        return _cannot_tell(f"invalid --timeout {args.timeout:g}: expected seconds greater than 0")

    if args.command == "serve":
        from health.server import serve

        return serve(args.host, args.port, args.worker, args.timeout)

    _start_watchdog(args.timeout, args.command)
    try:
        config = load_health_config()
        with open_database(config, args.timeout) as db:
            if args.command == "check":
                result = check_readiness(db, config, loops=args.loops, worker=args.worker)
                return _print_check(result, args.json, sys.stdout)
            live = check_liveness(db, config, worker=args.worker)
            return _print_live(live, args.json, sys.stdout)
    except (HealthConfigError, ProbeUnknown) as exc:
        return _cannot_tell(str(exc))
    except DatabaseUnavailable as exc:
        return _cannot_tell(str(exc))
    except database_errors() as exc:
        return _cannot_tell(f"database query failed (are migrations applied?): {first_line(exc)}")


def _cannot_tell(cause: str) -> int:
    print(f"health: cannot tell: {cause}", file=sys.stderr)
    return EXIT_UNKNOWN


def _start_watchdog(timeout_seconds: float, command: str) -> None:
    """End the process with status 2 once ``timeout_seconds`` pass, whatever it waits on."""

    def give_up() -> None:
        sys.stderr.write(f"health: cannot tell: {command} timed out after {timeout_seconds:g}s\n")
        sys.stderr.flush()
        os._exit(EXIT_UNKNOWN)

    timer = threading.Timer(timeout_seconds, give_up)
    timer.daemon = True
    timer.start()


def check_document(result: CheckResult) -> dict[str, Any]:
    """Return the JSON form of a readiness result."""
    worker = result.worker
    return {
        "ready": result.ready,
        "reason": result.reason,
        "now": result.readiness.now.isoformat(),
        "worker": None
        if worker is None
        else {"hostname": worker.hostname, "status": worker.status, "queues": worker.queues},
        "loops": [
            {
                "loop": verdict.loop,
                "status": str(verdict.status),
                "reason": verdict.reason,
                "critical": verdict.critical,
                "last_success_age_seconds": verdict.last_success_age_seconds,
                "max_age_seconds": verdict.max_age_seconds,
                "consecutive_failures": verdict.consecutive_failures,
                "last_error": verdict.last_error,
            }
            for verdict in result.readiness.verdicts
        ],
    }


def live_document(result: LiveResult) -> dict[str, Any]:
    return {
        "alive": result.alive,
        "reason": result.reason,
        "now": result.now.isoformat(),
        "worker": None if result.worker is None else result.worker.hostname,
    }


def _print_check(result: CheckResult, as_json: bool, out: TextIO) -> int:
    if as_json:
        out.write(json.dumps(check_document(result), indent=2) + "\n")
    else:
        out.write(format_table(result) + "\n")
        out.write("ready\n" if result.ready else f"not ready: {result.reason}\n")
    return EXIT_OK if result.ready else EXIT_FAILED


def _print_live(result: LiveResult, as_json: bool, out: TextIO) -> int:
    if as_json:
        out.write(json.dumps(live_document(result)) + "\n")
    else:
        out.write(("alive: " if result.alive else "not alive: ") + result.reason + "\n")
    return EXIT_OK if result.alive else EXIT_FAILED


#: Characters of the last error shown in a table cell.
TABLE_ERROR_CHARS = 60


def format_table(result: CheckResult) -> str:
    """Return one row per loop: status, last success age, maximum age, failures, last error."""
    header = ("LOOP", "STATUS", "LAST SUCCESS", "MAX AGE", "FAILURES", "LAST ERROR")
    rows = [header]
    for verdict in result.readiness.verdicts:
        age = verdict.last_success_age_seconds
        error = verdict.last_error or "-"
        if len(error) > TABLE_ERROR_CHARS:
            error = error[: TABLE_ERROR_CHARS - 3] + "..."
        rows.append(
            (
                verdict.loop,
                str(verdict.status),
                "never" if age is None else f"{age:.0f}s ago",
                f"{verdict.max_age_seconds:g}s",
                str(verdict.consecutive_failures),
                error,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)
