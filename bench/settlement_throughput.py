"""Settlement throughput: credits/s of one rebate run over a day with every player active.

Data: ``settlement.demo`` with the given player count, four bets per player
on average, all in the day before today (UTC), and no minimum basis or payout
in the rebate terms. Each run starts from the same
state: no runs, items, ledger rows or wallet outbox rows, and the seeded
balances. Figures:

* ``run_settlement("rebate", day)`` end to end (plan, items, credits, run record);
* the same with 1% of the players failing in the wallet gateway, so every
  batch holding one is split until the failing credit is alone;
* baseline: one ``INSERT ... SELECT`` of the same ledger rows into
  ``wallet_ledger`` (the database's limit for this table and its indexes).

Every run is checked: one ledger row, one balance change and one wallet
outbox event per credited item.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    Figure,
    Report,
    Sizes,
    apply_environment,
    machine_busy_cpu_seconds,
    peak_rss_mib,
    private_postgres,
    process_cpu_seconds,
    run_in_child,
    timed,
)

KIND = "rebate"
BETS_PER_PLAYER = 8
#: Every player whose id is a multiple of this fails in the failing-players variant (1%).
FAILING_PLAYER_MODULUS = 100
TARGET_CREDITS_PER_SECOND = 20_000

RESET_SQL = (
    "TRUNCATE settlement_items, settlement_runs, wallet_ledger, wallet_outbox RESTART IDENTITY",
    "UPDATE wallets AS w SET balance_minor = b.balance_minor"
    " FROM bench_wallet_balances AS b WHERE w.id = b.id",
)
LEDGER_COLUMNS = (
    "wallet_id, player_id, amount_minor, currency, entry_type, idempotency_key, reference"
)


def period_day() -> datetime:
    """Return the start of yesterday in UTC, the day the seeded bets fall in."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


def seed_child(environment: dict[str, str], players: int) -> dict[str, Any]:
    """Generate the demo data set for ``players`` with one day of bets; snapshot balances."""
    apply_environment(environment)
    from sqlalchemy import text

    from app.db import get_engine
    from settlement.demo import generate

    started = time.perf_counter()
    generate(
        players=players,
        bets=players * BETS_PER_PLAYER,
        days=1,
        outbox_backlog=0,
        end=period_day() + timedelta(days=1),
    )
    with get_engine().begin() as connection:
        # The demo terms skip small rebates; without minimums every player with
        # turnover and an open wallet is credited.
        connection.execute(
            text(
                "UPDATE promotion_terms SET min_basis_minor = 0, min_payout_minor = 1"
                " WHERE kind = :kind"
            ),
            {"kind": KIND},
        )
        connection.execute(
            text("CREATE TABLE bench_wallet_balances AS SELECT id, balance_minor FROM wallets")
        )
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    return {"seconds": time.perf_counter() - started}


class FailingLedgerGateway:
    """The ledger gateway, but a batch holding a failing player raises, as a broken wallet does."""

    def __init__(self) -> None:
        from settlement.ledger import LedgerGateway

        self.ledger = LedgerGateway()

    def credit_batch(self, session: Any, credits: Sequence[Any]) -> dict[int, Any]:
        for credit in credits:
            if credit.player_id % FAILING_PLAYER_MODULUS == 0:
                raise RuntimeError(f"wallet service rejected player {credit.player_id}")
        return self.ledger.credit_batch(session, credits)


def settle_child(environment: dict[str, str], period_key: str, failing: bool) -> dict[str, Any]:
    """Run one rebate settlement in this (child) process; return seconds, counts and peak RSS."""
    apply_environment(environment)
    from app.db import get_engine
    from settlement.runner import run_settlement

    engine = get_engine()
    gateway = FailingLedgerGateway() if failing else None
    rss_before = peak_rss_mib()

    started = time.perf_counter()
    cpu_before, machine_before = process_cpu_seconds(), machine_busy_cpu_seconds()
    outcome = run_settlement(KIND, period_key, gateway=gateway, engine=engine)
    cpu_seconds = process_cpu_seconds() - cpu_before
    machine_cpu_seconds = machine_busy_cpu_seconds() - machine_before
    seconds = time.perf_counter() - started

    engine.dispose()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "machine_cpu_seconds": machine_cpu_seconds,
        "counts": dict(outcome.counts),
        "status": outcome.status,
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }


def _execute(database_url: str, statements: Sequence[str], autocommit: bool = False) -> list[Any]:
    from sqlalchemy import text

    from app.db import create_database_engine

    engine = create_database_engine(database_url)
    try:
        isolation_level = "AUTOCOMMIT" if autocommit else "READ COMMITTED"
        with engine.connect().execution_options(isolation_level=isolation_level) as connection:
            results = []
            for sql in statements:
                result = connection.execute(text(sql))
                results.append(result.fetchall() if result.returns_rows else [])
            if not autocommit:
                connection.commit()
            return results
    finally:
        engine.dispose()


def reset(database_url: str) -> None:
    _execute(database_url, RESET_SQL)
    _execute(
        database_url,
        ["VACUUM ANALYZE wallets", "VACUUM ANALYZE wallet_ledger", "VACUUM ANALYZE wallet_outbox"],
        autocommit=True,
    )


def check_delivery(database_url: str, credited: int) -> None:
    """Raise unless each credited item has one ledger row, one balance change and one event."""
    (ledger, events, changed), *_ = _execute(
        database_url,
        [
            "SELECT (SELECT count(*) FROM wallet_ledger),"
            " (SELECT count(*) FROM wallet_outbox),"
            " (SELECT count(*) FROM wallets AS w JOIN bench_wallet_balances AS b"
            "  ON w.id = b.id WHERE w.balance_minor <> b.balance_minor)"
        ],
    )[0]
    if not ledger == events == changed == credited:
        raise RuntimeError(
            f"{credited} credited items, but {ledger} ledger rows, {events} wallet outbox events"
            f" and {changed} changed balances"
        )


def measure_insert_select(database_url: str) -> dict[str, Any]:
    """Time one INSERT ... SELECT of the current ledger rows into an emptied wallet_ledger."""
    from sqlalchemy import text

    from app.db import create_database_engine

    engine = create_database_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    f"CREATE TABLE bench_ledger_rows AS SELECT {LEDGER_COLUMNS} FROM wallet_ledger"  # noqa: S608 - a constant column list
                )
            )
            connection.execute(text("TRUNCATE settlement_items, wallet_ledger"))
        rows = 0
        started = time.perf_counter()
        with engine.begin() as connection:
            result = connection.execute(
                text(
                    f"INSERT INTO wallet_ledger ({LEDGER_COLUMNS})"  # noqa: S608
                    f" SELECT {LEDGER_COLUMNS} FROM bench_ledger_rows"
                )
            )
            rows = result.rowcount
        seconds = time.perf_counter() - started
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE bench_ledger_rows"))
    finally:
        engine.dispose()
    return {"seconds": seconds, "rows": rows, "rate": rows / seconds}


def measure_settlement(
    database_url: str, period_key: str, failing: bool, baseline: bool = False
) -> dict[str, Any]:
    reset(database_url)
    environment = {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    result = run_in_child(settle_child, environment, period_key, failing)
    credited = result["counts"].get("credited", 0)
    if credited == 0:
        raise RuntimeError(f"the settlement run credited nothing: {result}")
    check_delivery(database_url, credited)
    result["credited"] = credited
    result["rate"] = credited / result["seconds"]
    if baseline:
        result["baseline"] = measure_insert_select(database_url)
    return result


def seed(database_url: str, players: int) -> str:
    """Seed the private database and return the period key that the runs settle."""
    environment = {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    run_in_child(seed_child, environment, players)
    return period_day().date().isoformat()


def run(sizes: Sizes, report: Report) -> None:
    with private_postgres("settlement") as database_url:
        period_key = seed(database_url, sizes.settlement_players)
        plain = [
            measure_settlement(database_url, period_key, False, baseline=True)
            for _ in range(sizes.runs)
        ]
        failing = [measure_settlement(database_url, period_key, True) for _ in range(sizes.runs)]

    report.raw["settlement_run"] = plain
    name = "settlement_throughput"
    players = f"{sizes.settlement_players:,} players"
    main = report.add(
        Figure(
            name,
            f"run_settlement rebate, end to end, {players}",
            "credits/s",
            [result["rate"] for result in plain],
            target=f">= {TARGET_CREDITS_PER_SECOND:,} credits/s",
        )
    )
    main.met = main.median >= TARGET_CREDITS_PER_SECOND
    counts = plain[0]["counts"]
    main.note = (
        f"{plain[0]['credited']:,} credited, {counts.get('skipped', 0):,} skipped"
        f" of {counts.get('eligible', 0):,} eligible; median {_median_seconds(plain):.2f} s per run"
    )
    report.add(
        Figure(
            name,
            "CPU time of the settling process (all its threads) per run",
            "s",
            [result["cpu_seconds"] for result in plain],
        )
    )
    report.add(
        Figure(
            name,
            "CPU time of the whole machine per run (PostgreSQL included; 2 cores give 2 s per s)",
            "s",
            [result["machine_cpu_seconds"] for result in plain],
        )
    )
    with_failures = report.add(
        Figure(
            name,
            f"same, 1% of players failing in the gateway (isolated by batch splitting), {players}",
            "credits/s",
            [result["rate"] for result in failing],
        )
    )
    with_failures.note = (
        f"{failing[0]['counts'].get('failed', 0):,} failed items, status {failing[0]['status']};"
        f" median {_median_seconds(failing):.2f} s per run"
    )
    report.add(
        Figure(
            name,
            "baseline: one INSERT ... SELECT of the same ledger rows",
            "rows/s",
            [result["baseline"]["rate"] for result in plain],
        )
    )


def _median_seconds(results: list[dict[str, Any]]) -> float:
    seconds = sorted(result["seconds"] for result in results)
    return seconds[len(seconds) // 2]


def _timed_phases(phases: dict[str, float]) -> None:
    """Wrap the run's two steps in this process so that each adds its wall time to ``phases``."""
    from settlement import runner

    runner._insert_planned_items = timed(
        phases, "plan: activity query, amounts, items inserted", runner._insert_planned_items
    )
    runner.credit_concurrently = timed(
        phases, "credit: batches of pending items", runner.credit_concurrently
    )


def main() -> None:
    """Seed and settle once in this process, for profiling with py-spy or pyinstrument."""
    parser = argparse.ArgumentParser(description="seed and run one rebate settlement")
    parser.add_argument("--players", type=int, default=20_000, help="players to seed")
    parser.add_argument("--failing", action="store_true", help="1%% of players fail")
    parser.add_argument(
        "--phases", action="store_true", help="print the wall time of planning and of crediting"
    )
    arguments = parser.parse_args()

    phases: dict[str, float] = {}
    if arguments.phases:
        _timed_phases(phases)
    with private_postgres("profile") as database_url:
        period_key = seed(database_url, arguments.players)
        reset(database_url)
        result = settle_child(
            {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}, period_key, arguments.failing
        )
        credited = result["counts"].get("credited", 0)
        print(result, f"{credited / result['seconds']:.0f} credits/s")
    for name, seconds in phases.items():
        print(f"  {name}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
