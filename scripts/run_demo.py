"""Run the whole job on a generated data set and print a report: ``make demo``.

The script migrates and generates data unless the database already has
players. It starts ``celery -A app worker --beat`` and sends the three
settlement tasks for their last complete periods. It waits until the runs
finish and every outbox stream is drained, or the time limit passes, then
takes the health verdict and stops the worker. The report lists events
published per stream, each settlement run with counts, totals and duration,
and whether the totals agree:

* the credited items' amounts equal the ledger rows they wrote, per kind;
* every credit has its ``wallet.credited`` event in ``wallet_outbox``.

The configuration comes from the environment as for any process, so the
same script runs on the embedded default and on PostgreSQL and Redis. The
exit status is 0 only when every run succeeded, every stream drained, the
totals agree and the health check is ready.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from sqlalchemy import func, select  # noqa: E402

from app.db import get_engine, transaction  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.settings import settings_or_exit  # noqa: E402
from outbox.models import OUTBOX_MODELS  # noqa: E402
from settlement import demo  # noqa: E402
from settlement.ledger import CREDIT_EVENT_TYPE  # noqa: E402
from settlement.models import Currency, LedgerEntry, SettlementItem, SettlementRun  # noqa: E402
from settlement.periods import SETTLEMENT_KINDS  # noqa: E402
from settlement.records import CREDITED_EARLIER  # noqa: E402

#: Seconds between two looks at the database while waiting for the job.
POLL_INTERVAL_SECONDS = 1.0
#: Seconds the worker gets to stop after SIGTERM before it is killed.
WORKER_STOP_SECONDS = 30.0
#: Seconds the health check may take.
HEALTH_TIMEOUT_SECONDS = 10.0


@dataclass
class Report:
    timings_seconds: dict[str, float] = field(default_factory=dict)
    streams: dict[str, dict[str, int]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    health_exit_code: int | None = None
    health_output: str = ""
    problems: list[str] = field(default_factory=list)


def _python() -> str:
    return sys.executable


def _celery() -> str:
    return str(Path(sys.executable).parent / "celery")


@contextmanager
def running_worker(log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celery -A app worker --beat`` with its output in ``log_path``; stop it on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                _celery(),
                "-A",
                "app",
                "worker",
                "--beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(log_path.parent / "celerybeat-schedule"),
            ],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def send_settlements() -> None:
    """Send each settlement task with no period, as beat does: the last complete period."""
    for kind in SETTLEMENT_KINDS:
        subprocess.run(
            [_celery(), "-A", "app", "call", f"tasks.settlement.{kind}", "--queue", "settlement"],
            cwd=PROJECT_ROOT,
            check=True,
            capture_output=True,
        )


def publishable_rows() -> dict[str, int]:
    counts = {}
    with transaction() as session:
        for stream, model in OUTBOX_MODELS.items():
            counts[stream] = session.scalar(
                select(func.count())
                .select_from(model)
                .where(model.published_at.is_(None), model.parked_at.is_(None))
            )
    return counts


def finished_runs(since_id: int) -> list[SettlementRun]:
    with transaction() as session:
        runs = session.scalars(
            select(SettlementRun).where(SettlementRun.id > since_id).order_by(SettlementRun.id)
        )
        return [run for run in runs if run.status != "running"]


def last_run_id() -> int:
    with transaction() as session:
        return int(session.scalar(select(func.coalesce(func.max(SettlementRun.id), 0))) or 0)


def wait_for_job(since_id: int, deadline: float, worker: subprocess.Popen[bytes]) -> None:
    """Wait until three runs finished and no stream has publishable rows, or the deadline."""
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with status {worker.returncode}")
        runs = finished_runs(since_id)
        backlog = publishable_rows()
        print(
            f"  waiting: {len(runs)}/3 settlement runs finished, publishable rows {backlog}",
            file=sys.stderr,
        )
        if len(runs) >= len(SETTLEMENT_KINDS) and not any(backlog.values()):
            return
        time.sleep(POLL_INTERVAL_SECONDS)


def health_verdict(report: Report) -> None:
    completed = subprocess.run(
        [_python(), "-m", "health", "check", "--timeout", str(HEALTH_TIMEOUT_SECONDS)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=HEALTH_TIMEOUT_SECONDS + 5,
    )
    report.health_exit_code = completed.returncode
    report.health_output = (completed.stdout + completed.stderr).strip()


def collect_streams(report: Report, started_publishable: dict[str, int]) -> None:
    with transaction() as session:
        for stream, model in OUTBOX_MODELS.items():
            published = session.scalar(
                select(func.count()).select_from(model).where(model.published_at.is_not(None))
            )
            remaining = session.scalar(
                select(func.count())
                .select_from(model)
                .where(model.published_at.is_(None), model.parked_at.is_(None))
            )
            parked = session.scalar(
                select(func.count()).select_from(model).where(model.parked_at.is_not(None))
            )
            report.streams[stream] = {
                "backlog_at_start": started_publishable[stream],
                "published": int(published or 0),
                "publishable_left": int(remaining or 0),
                "parked": int(parked or 0),
            }
            if remaining:
                report.problems.append(f"stream {stream} still has {remaining} publishable rows")


def _major_units(amounts: dict[str, int], minor_units: dict[str, int]) -> dict[str, str]:
    return {
        currency: str(Decimal(amount).scaleb(-minor_units[currency]))
        for currency, amount in sorted(amounts.items())
    }


def collect_runs(report: Report, since_id: int) -> None:
    with transaction() as session:
        minor_units = dict(session.execute(select(Currency.code, Currency.minor_units)).all())
        for run in session.scalars(
            select(SettlementRun).where(SettlementRun.id > since_id).order_by(SettlementRun.id)
        ):
            duration = (
                (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
            )
            report.runs.append(
                {
                    "run_id": run.id,
                    "kind": run.kind,
                    "period": run.period_key,
                    "status": run.status,
                    "eligible": run.eligible_count,
                    "credited": run.credited_count,
                    "skipped": run.skipped_count,
                    "failed": run.failed_count,
                    "credited_amount": _major_units(run.credited_amount_minor, minor_units),
                    "duration_seconds": duration,
                }
            )
            if run.status not in ("succeeded", "empty"):
                report.problems.append(f"settlement run {run.id} ({run.kind}) is {run.status}")


def check_totals(report: Report) -> None:
    """Compare credited items with ledger rows, and credits with wallet_outbox events."""
    with transaction() as session:
        item_totals = dict(
            session.execute(
                select(SettlementItem.kind, func.sum(SettlementItem.amount_minor))
                .where(SettlementItem.status == "credited")
                .where(
                    SettlementItem.reason.is_(None)
                    | SettlementItem.reason.not_like(f"{CREDITED_EARLIER}%")
                )
                .group_by(SettlementItem.kind)
            ).all()
        )
        ledger_totals = dict(
            session.execute(
                select(LedgerEntry.entry_type, func.sum(LedgerEntry.amount_minor)).group_by(
                    LedgerEntry.entry_type
                )
            ).all()
        )
        ledger_keys = set(session.scalars(select(LedgerEntry.idempotency_key)))
        wallet_model = OUTBOX_MODELS["wallet"]
        event_keys = {
            payload.get("idempotency_key")
            for payload in session.scalars(
                select(wallet_model.payload).where(wallet_model.event_type == CREDIT_EVENT_TYPE)
            )
        }

    report.totals = {
        "credited_items_minor": {kind: int(total) for kind, total in item_totals.items()},
        "ledger_minor": {kind: int(total) for kind, total in ledger_totals.items()},
        "ledger_rows": len(ledger_keys),
        "credit_events": len(event_keys),
    }
    for kind in SETTLEMENT_KINDS:
        items = int(item_totals.get(kind) or 0)
        ledger = int(ledger_totals.get(kind) or 0)
        if items != ledger:
            report.problems.append(f"{kind}: credited items sum {items} != ledger sum {ledger}")
    missing = ledger_keys - event_keys
    if missing:
        report.problems.append(f"{len(missing)} credits have no wallet.credited event")


def print_report(report: Report) -> None:
    print("\n== timings (seconds)")
    for name, seconds in report.timings_seconds.items():
        print(f"  {name:<28} {seconds:8.1f}")

    print("\n== outbox streams")
    print(f"  {'stream':<8} {'backlog at start':>17} {'published':>10} {'left':>6} {'parked':>7}")
    for stream, counts in report.streams.items():
        print(
            f"  {stream:<8} {counts['backlog_at_start']:>17} {counts['published']:>10}"
            f" {counts['publishable_left']:>6} {counts['parked']:>7}"
        )

    print("\n== settlement runs")
    for run in report.runs:
        amounts = ", ".join(f"{amount} {code}" for code, amount in run["credited_amount"].items())
        print(
            f"  run {run['run_id']} {run['kind']:<8} {run['period']:<10} {run['status']:<10}"
            f" eligible={run['eligible']} credited={run['credited']} skipped={run['skipped']}"
            f" failed={run['failed']} in {run['duration_seconds'] or 0:.1f}s;"
            f" credited {amounts or 'nothing'}"
        )

    print("\n== totals")
    print(f"  credited items (minor units): {report.totals.get('credited_items_minor')}")
    print(f"  ledger rows (minor units):    {report.totals.get('ledger_minor')}")
    print(
        f"  ledger rows: {report.totals.get('ledger_rows')},"
        f" wallet.credited events: {report.totals.get('credit_events')}"
    )

    print(f"\n== health verdict (python -m health check: exit {report.health_exit_code})")
    for line in report.health_output.splitlines():
        print(f"  {line}")

    print()
    if report.problems:
        print("RESULT: FAILED")
        for problem in report.problems:
            print(f"  - {problem}")
    else:
        print("RESULT: OK: every run delivered, every stream drained, totals agree, ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole job and print a report.")
    parser.add_argument("--players", type=int, default=2_000, help="players to generate")
    parser.add_argument("--bets", type=int, default=100_000, help="bets to generate")
    parser.add_argument("--outbox-backlog", type=int, default=2_000, help="events per stream")
    parser.add_argument("--seed", type=int, default=demo.DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="time limit for the job, in seconds"
    )
    parser.add_argument("--reset", action="store_true", help="replace existing data")
    parser.add_argument("--json-out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    report = Report()
    started = time.monotonic()

    step = time.monotonic()
    upgrade(settings.sqlalchemy_database_url)
    engine = get_engine()
    if args.reset:
        demo.clear(engine)
    if demo.is_empty(engine):
        print(f"generating {args.players} players and {args.bets} bets", file=sys.stderr)
        demo.generate(
            seed=args.seed,
            players=args.players,
            bets=args.bets,
            outbox_backlog=args.outbox_backlog,
        )
    report.timings_seconds["migrate and generate data"] = time.monotonic() - step

    since_id = last_run_id()
    backlog_at_start = publishable_rows()
    log_path = Path(settings.var_dir) / "demo" / "worker.log"
    with running_worker(log_path) as worker:
        step = time.monotonic()
        send_settlements()
        wait_for_job(since_id, step + args.max_seconds, worker)
        report.timings_seconds["settle and drain outbox"] = time.monotonic() - step
        health_verdict(report)

    collect_streams(report, backlog_at_start)
    collect_runs(report, since_id)
    check_totals(report)
    if report.health_exit_code != 0:
        report.problems.append(f"health check exited {report.health_exit_code}")
    report.timings_seconds["total"] = time.monotonic() - started

    print_report(report)
    print(f"\nworker log: {log_path}", file=sys.stderr)
    if args.json_out:
        args.json_out.write_text(json.dumps(report.__dict__, indent=2, default=str))
    return 1 if report.problems else 0


if __name__ == "__main__":
    os.chdir(PROJECT_ROOT)
    sys.exit(main())
