"""Peak RSS of the draining and the crediting process at 1x and 10x the rows.

Each figure is ``ru_maxrss`` of a fresh child process that drains the outbox
or runs one settlement (see the throughput benchmarks). The 10x figures reuse
the throughput runs of the same ``python -m bench`` call when they ran.
"""

from __future__ import annotations

from typing import Any

from bench import outbox_throughput, settlement_throughput
from bench.common import REDIS_URL, Figure, Report, Sizes, private_postgres

#: Peak RSS at 10x the rows may exceed the 1x figure by at most this factor to count as flat.
FLAT_GROWTH_FACTOR = 1.25


def _outbox_runs(database_url: str, rows: int, runs: int) -> list[dict[str, Any]]:
    return [
        outbox_throughput.measure_drain(database_url, REDIS_URL, rows, False) for _ in range(runs)
    ]


def _settlement_runs(players: int, runs: int) -> list[dict[str, Any]]:
    with private_postgres("memory") as database_url:
        period_key = settlement_throughput.seed(database_url, players)
        return [
            settlement_throughput.measure_settlement(database_url, period_key, False)
            for _ in range(runs)
        ]


def _add_pair(
    report: Report,
    description: str,
    unit_name: str,
    small: tuple[int, list[dict[str, Any]]],
    large: tuple[int, list[dict[str, Any]]],
) -> None:
    small_figure = report.add(
        Figure(
            "memory",
            f"{description}, {small[0]:,} {unit_name}",
            "MiB",
            [result["peak_rss_mib"] for result in small[1]],
        )
    )
    large_figure = report.add(
        Figure(
            "memory",
            f"{description}, {large[0]:,} {unit_name}",
            "MiB",
            [result["peak_rss_mib"] for result in large[1]],
            target=f"<= {FLAT_GROWTH_FACTOR:g}x the {small[0]:,}-{unit_name} figure",
        )
    )
    growth = large_figure.median / small_figure.median
    large_figure.met = growth <= FLAT_GROWTH_FACTOR
    large_figure.note = f"{growth:.2f}x the peak at {small[0]:,} {unit_name}"


def run(sizes: Sizes, report: Report, database_url: str) -> None:
    rows = sizes.outbox_rows
    large_drains = report.raw.get("outbox_drain") or _outbox_runs(database_url, rows, sizes.runs)
    small_drains = _outbox_runs(database_url, rows // 10, sizes.runs)
    _add_pair(
        report,
        "peak RSS of the draining process (drain_stream to Redis)",
        "rows",
        (rows // 10, small_drains),
        (rows, large_drains),
    )

    players = sizes.settlement_players
    large_runs = report.raw.get("settlement_run") or _settlement_runs(players, sizes.runs)
    small_runs = _settlement_runs(players // 10, sizes.runs)
    _add_pair(
        report,
        "peak RSS of the crediting process (run_settlement)",
        "players",
        (players // 10, small_runs),
        (players, large_runs),
    )
