"""The benchmarks run end to end at tiny sizes and write their results block."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import run_benchmarks
from bench.common import QUICK, Sizes
from bench.markdown import RESULTS_END, RESULTS_START, render_results, replace_results
from bench.outbox_throughput import BATCH_SIZE

#: One run per figure, a few rows: proves the code paths, measures nothing.
SMOKE = Sizes(**{**QUICK.__dict__, "runs": 1, "probe_runs": 1, "freshness_iterations": 5})

EXPECTED_BENCHMARKS = {
    "outbox_throughput",
    "freshness_overhead",
    "probe_latency",
    "settlement_throughput",
    "memory",
}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.rabbitmq
def test_bench_all_benchmarks_report_figures(
    postgres_url: str, redis_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    report = run_benchmarks(
        ["outbox", "freshness", "probe", "settlement", "memory"], SMOKE, rabbitmq=True
    )

    assert {figure.benchmark for figure in report.figures} == EXPECTED_BENCHMARKS
    assert len(report.figures) == 20
    for figure in report.figures:
        assert len(figure.values) >= 1, figure.name
        assert all(value > 0 for value in figure.values), figure.name

    page = tmp_path / "benchmarks.md"
    page.write_text(
        f"# Benchmarks\n\nanalysis above\n\n{RESULTS_START}\nold\n{RESULTS_END}\n\ntail\n"
    )
    replace_results(page, render_results(report, SMOKE, {"CPUs (nproc)": "2"}))
    text = page.read_text()

    assert text.startswith("# Benchmarks\n\nanalysis above\n\n")
    assert text.endswith(f"{RESULTS_END}\n\ntail\n")
    assert "\nold\n" not in text
    assert (
        "| outbox_throughput | drain_stream, PostgreSQL to Redis, 600 rows,"
        f" batches of {BATCH_SIZE} |" in text
    )


def test_bench_results_appended_without_markers(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")

    replace_results(page, f"{RESULTS_START}\nnew\n{RESULTS_END}")

    assert page.read_text() == f"# Benchmarks\n\n{RESULTS_START}\nnew\n{RESULTS_END}\n"
