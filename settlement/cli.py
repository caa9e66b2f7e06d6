"""Operator CLI of settlement: ``python -m settlement run|report|void``.

Exit status: 0 when every eligible credit was delivered or nothing was
eligible. 1 on non-delivery, a rejected void or a run already in progress.
2 on invalid input or when the database could not be reached, and 78 on a
configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.db import get_engine, transaction
from app.logs import configure_logging
from app.operator import operator_name
from app.redaction import describe_error
from app.settings import settings_or_exit
from settlement.errors import InvalidPeriod
from settlement.periods import SETTLEMENT_KINDS, parse_period, period_length
from settlement.records import VoidRejected, load_runs, run_report, void_item
from settlement.runner import SettlementPlan, plan_settlement, resolve_run_period

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

REPORT_COLUMNS = (
    ("run_id", "RUN"),
    ("status", "STATUS"),
    ("eligible", "ELIGIBLE"),
    ("credited", "CREDITED"),
    ("skipped", "SKIPPED"),
    ("failed", "FAILED"),
    ("voided", "VOIDED"),
    ("duration_seconds", "SECONDS"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m settlement", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run one kind's settlement task in this process, as the worker would"
    )
    run.add_argument("--kind", choices=SETTLEMENT_KINDS, required=True)
    run.add_argument(
        "--period",
        help="ISO date (2026-12-03) or, for weekly kinds, ISO week (2026-W49);"
        " default: the last complete period",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print what would be credited and write nothing"
    )
    run.add_argument("--json", action="store_true", help="print JSON instead of text")

    report = commands.add_parser("report", help="print the runs of one kind and period")
    report.add_argument("--kind", choices=SETTLEMENT_KINDS, required=True)
    report.add_argument("--period", required=True, help="ISO date or ISO week of the period")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")

    void = commands.add_parser(
        "void", help="mark a failed item as not to be paid, so later runs skip the player"
    )
    void.add_argument(
        "--run-id", type=int, required=True, help="id of the run that contains the failed item"
    )
    void.add_argument("--player", type=int, required=True, help="player id of the failed item")
    void.add_argument("--reason", required=True, help="why the player is not paid; logged")
    void.add_argument("--actor", help="who is voiding, stored with the reason (default: $USER)")
    return parser


def _print_plan(plan: SettlementPlan, as_json: bool) -> None:
    items = [
        {
            "player_id": item.player_id,
            "currency": item.currency,
            "basis_minor": item.basis_minor,
            "amount_minor": item.amount_minor,
            "status": "would_credit" if item.status == "pending" else item.status,
            "reason": item.reason or item.error,
        }
        for item in plan.items
    ]
    totals: dict[str, int] = {}
    for item in plan.items:
        if item.status == "pending":
            totals[item.currency] = totals.get(item.currency, 0) + item.amount_minor

    if as_json:
        document = {
            "kind": plan.kind,
            "period_key": plan.period.key,
            "dry_run": True,
            "would_credit_minor": totals,
            "items": items,
        }
        print(json.dumps(document, indent=2))
        return

    print(f"dry run of {plan.kind} {plan.period.key}: nothing was written")
    print(f"{'PLAYER':>10} {'CURRENCY':<8} {'BASIS':>14} {'AMOUNT':>12} STATUS")
    for row in items:
        reason = f" ({row['reason']})" if row["reason"] else ""
        print(
            f"{row['player_id']:>10} {row['currency']:<8} {row['basis_minor']:>14}"
            f" {row['amount_minor']:>12} {row['status']}{reason}"
        )
    total_text = ", ".join(f"{amount} {currency}" for currency, amount in sorted(totals.items()))
    print(
        f"would credit {len([i for i in plan.items if i.status == 'pending'])} players,"
        f" minor units: {total_text or 'none'}"
    )


def run_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        # The dry run calls the runner directly: through the task it would
        # record a successful iteration and refresh freshness without a credit.
        _print_plan(plan_settlement(args.kind, args.period), args.json)
        return EXIT_OK

    # A bad period is an input error, checked before the task runs: through the
    # task it would be recorded as a failed iteration of the loop.
    try:
        resolve_run_period(args.kind, args.period)
    except InvalidPeriod as exc:
        print(f"settlement {args.kind} not run: {exc}", file=sys.stderr)
        return EXIT_INVALID

    # Celery is imported here only, so report and void do not load it.
    from app.celery_app import celery
    from tasks.settlement import SETTLEMENT_TASKS

    task = celery.tasks[SETTLEMENT_TASKS[args.kind].name]
    result = task.apply(kwargs={"period": args.period})
    if result.successful():
        if args.json:
            print(json.dumps(result.result, indent=2, default=str))
        else:
            print(_describe_summary(result.result))
        return EXIT_OK

    error = result.result
    if isinstance(error, ValueError):
        print(f"settlement {args.kind} not run: {error}", file=sys.stderr)
        return EXIT_INVALID
    print(f"settlement {args.kind} did not deliver: {error}", file=sys.stderr)
    summary = getattr(error, "summary", None)
    if summary and args.json:
        print(json.dumps(summary, indent=2, default=str), file=sys.stderr)
    return EXIT_FAILED


def _describe_summary(summary: dict[str, Any]) -> str:
    counts = summary.get("counts", {})
    order = ("eligible", "credited", "credited_earlier", "skipped", "failed", "voided")
    counts_text = " ".join(f"{name}={counts.get(name, 0)}" for name in order)
    amounts = summary.get("credited_amount_minor") or {}
    amount_text = ", ".join(f"{amount} {currency}" for currency, amount in sorted(amounts.items()))
    return (
        f"settlement {summary.get('kind')} {summary.get('period_key')} run"
        f" {summary.get('run_id')} {summary.get('status')}: {counts_text};"
        f" credited minor units: {amount_text or 'none'}"
    )


def run_report_command(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    length = period_length(args.kind, settings.lossback_period)
    period = parse_period(args.period, length, settings.timezone)
    with transaction() as session:
        runs = [run_report(run) for run in load_runs(session, args.kind, period.key)]

    if args.json:
        print(json.dumps({"kind": args.kind, "period_key": period.key, "runs": runs}, indent=2))
        return EXIT_OK if runs else EXIT_FAILED
    if not runs:
        print(f"no settlement run found for {args.kind} {period.key}", file=sys.stderr)
        return EXIT_FAILED

    print(f"settlement {args.kind} {period.key}")
    print(" ".join(f"{title:>9}" for _, title in REPORT_COLUMNS) + "  CREDITED (MINOR UNITS)")
    for run in runs:
        cells = " ".join(
            f"{'-' if run[key] is None else run[key]!s:>9}" for key, _ in REPORT_COLUMNS
        )
        amounts = run["credited_amount_minor"]
        amount_text = ", ".join(
            f"{amount} {currency}" for currency, amount in sorted(amounts.items())
        )
        print(f"{cells}  {amount_text or '-'}")
        if run["failed_player_ids"]:
            failed_text = ", ".join(str(player_id) for player_id in run["failed_player_ids"])
            print(f"      run {run['run_id']} failed players: {failed_text}")
        if run["error"]:
            print(f"      run {run['run_id']} error: {run['error']}")
    return EXIT_OK


def run_void(args: argparse.Namespace) -> int:
    try:
        item = void_item(
            get_engine(), args.run_id, args.player, args.reason, operator_name(args.actor)
        )
    except VoidRejected as exc:
        print(f"void rejected, nothing changed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"voided the {item.kind} {item.period_key} item of player {item.player_id}"
        f" in run {item.run_id}"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)

    handlers = {"run": run_run, "report": run_report_command, "void": run_void}
    try:
        return int(handlers[args.command](args))
    except InvalidPeriod as exc:
        print(f"invalid period: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except SQLAlchemyError as exc:
        print(f"database unavailable: {describe_error(exc)}", file=sys.stderr)
        return EXIT_INVALID
