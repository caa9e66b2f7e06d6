"""``python -m bench``: run every benchmark and write the results into docs/benchmarks.md.

Only the block between the result markers in the output file is replaced, so
the hand-written analysis around it stays. Without the markers the block is
appended.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    freshness_overhead,
    memory,
    outbox_throughput,
    probe_latency,
    settlement_throughput,
)
from bench.common import DEFAULT, FULL, QUICK, Report, Sizes, load_average, private_postgres
from bench.environment import describe_environment
from bench.markdown import render_results, replace_results

BENCHMARKS = ("outbox", "freshness", "probe", "settlement", "memory")
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
#: A 1-minute load average above this means other work shares the CPUs.
BUSY_LOAD_AVERAGE = 1.5
#: Seconds to wait for the load average to drop below BUSY_LOAD_AVERAGE before starting anyway.
DEFAULT_LOAD_WAIT_SECONDS = 120.0
LOAD_POLL_SECONDS = 10.0

logger = logging.getLogger("bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    mode.add_argument(
        "--full", action="store_true", help="the spec's sizes everywhere (100,000 players)"
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    parser.add_argument("--runs", type=int, help="timed runs per figure (at least 3)")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to write the results to"
    )
    parser.add_argument("--no-rabbitmq", action="store_true", help="skip the RabbitMQ drain")
    parser.add_argument(
        "--load-wait-seconds",
        type=float,
        default=DEFAULT_LOAD_WAIT_SECONDS,
        help="seconds to wait for a 1-minute load average below 1.5 before measuring",
    )
    return parser


def _sizes(arguments: argparse.Namespace) -> Sizes:
    sizes = DEFAULT
    if arguments.quick:
        sizes = QUICK
    elif arguments.full:
        sizes = FULL
    if arguments.runs is not None:
        if arguments.runs < 3:
            raise SystemExit("--runs must be at least 3: each figure is a median of 3 or more runs")
        sizes = Sizes(**{**sizes.__dict__, "runs": arguments.runs})
    return sizes


def _wait_for_quiet_machine(wait_seconds: float) -> float:
    """Wait until the load average drops below BUSY_LOAD_AVERAGE or time runs out; return it."""
    deadline = time.monotonic() + wait_seconds
    load = load_average()
    while load > BUSY_LOAD_AVERAGE and time.monotonic() < deadline:
        logger.info("load average %.2f is above %.1f; waiting", load, BUSY_LOAD_AVERAGE)
        time.sleep(LOAD_POLL_SECONDS)
        load = load_average()
    return load


def run_benchmarks(selected: list[str], sizes: Sizes, rabbitmq: bool) -> Report:
    report = Report()
    with private_postgres("main") as database_url:
        for name in selected:
            started = time.perf_counter()
            logger.info("running %s (%s sizes)", name, sizes.name)
            if name == "outbox":
                outbox_throughput.run(sizes, report, database_url, rabbitmq=rabbitmq)
            elif name == "freshness":
                freshness_overhead.run(sizes, report, database_url)
            elif name == "probe":
                probe_latency.run(sizes, report, database_url)
            elif name == "settlement":
                settlement_throughput.run(sizes, report)
            elif name == "memory":
                memory.run(sizes, report, database_url)
            logger.info("%s done in %.1f s", name, time.perf_counter() - started)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    arguments = build_parser().parse_args(argv)
    sizes = _sizes(arguments)
    selected = [name.strip() for name in arguments.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(
            f"unknown benchmark {', '.join(unknown)}: expected {', '.join(BENCHMARKS)}"
        )

    load_at_start = _wait_for_quiet_machine(arguments.load_wait_seconds)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    report = run_benchmarks(selected, sizes, rabbitmq=not arguments.no_rabbitmq)
    elapsed = time.perf_counter() - started

    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    environment = describe_environment()
    environment["load average (1 min) at start, at end"] = (
        f"{load_at_start:.2f}, {load_average():.2f}"
    )
    environment["date (UTC)"] = started_at.strftime("%Y-%m-%d %H:%M")
    environment["command"] = f"`{command.strip()}` ({sizes.name} sizes, {elapsed:.0f} s)"
    environment["platform"] = platform.platform()
    results = render_results(report, sizes, environment)
    replace_results(arguments.output, results)
    print(results)
    failed = [figure for figure in report.figures if figure.met is False]
    for figure in failed:
        logger.warning("target missed: %s: %s", figure.name, figure.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
