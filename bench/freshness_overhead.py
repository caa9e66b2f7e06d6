"""Freshness overhead: what the base task adds to one loop iteration on PostgreSQL.

Two tasks with the same empty body run eagerly (``Task.apply``) in one child
process: one on :class:`app.loop_task.LoopTask`, which records the start and
the success of every iteration in ``loop_health``, and one on Celery's plain
``Task``. The added cost of a run is the median LoopTask iteration minus the
median plain iteration.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import Figure, Report, Sizes, apply_environment, run_in_child

TARGET_MILLISECONDS = 2.0
#: Iterations of each task before timing starts (connection pool, statement caches).
WARMUP_ITERATIONS = 20


def iterations_child(environment: dict[str, str], iterations: int) -> dict[str, Any]:
    """Time ``iterations`` eager calls of a LoopTask and of a plain task; return per-call ms."""
    apply_environment(environment)
    from celery import Celery, Task

    from app.loop_task import LoopTask
    from app.outcome import IterationOutcome

    app = Celery("bench_freshness", set_as_current=True)
    app.conf.update(task_always_eager=True, task_store_eager_result=False)

    @app.task(base=LoopTask, bind=True, name="bench.freshness.loop")
    def loop_iteration(self: Any) -> IterationOutcome:
        return IterationOutcome(loop=self.loop, counts={"done": 1})

    @app.task(base=Task, bind=True, name="bench.freshness.plain")
    def plain_iteration(self: Any) -> IterationOutcome:
        return IterationOutcome(loop=str(self.name), counts={"done": 1})

    def per_call_ms(task: Any) -> list[float]:
        for _ in range(WARMUP_ITERATIONS):
            task.apply().get()
        durations = []
        for _ in range(iterations):
            started = time.perf_counter()
            result = task.apply()
            durations.append((time.perf_counter() - started) * 1000)
            if result.state != "SUCCESS":
                raise RuntimeError(f"{task.name} ended {result.state}: {result.result!r}")
        return durations

    loop_ms = per_call_ms(loop_iteration)
    plain_ms = per_call_ms(plain_iteration)
    return {
        "loop_median_ms": statistics.median(loop_ms),
        "plain_median_ms": statistics.median(plain_ms),
        "added_ms": statistics.median(loop_ms) - statistics.median(plain_ms),
    }


def _check_recorded(database_url: str) -> None:
    """Raise unless the LoopTask iterations refreshed their loop's last success."""
    from sqlalchemy import text

    from app.db import create_database_engine

    engine = create_database_engine(database_url)
    try:
        with engine.connect() as connection:
            query = text(
                "SELECT last_success_at IS NOT NULL FROM loop_health WHERE loop_name = :loop"
            )
            recorded = connection.execute(query, {"loop": "bench.freshness.loop"}).scalar()
    finally:
        engine.dispose()
    if not recorded:
        raise RuntimeError("the LoopTask iterations recorded no success in loop_health")


def run(sizes: Sizes, report: Report, database_url: str) -> None:
    environment = {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    results = [
        run_in_child(iterations_child, environment, sizes.freshness_iterations)
        for _ in range(sizes.runs)
    ]
    _check_recorded(database_url)

    name = "freshness_overhead"
    added = report.add(
        Figure(
            name,
            "added cost per iteration (LoopTask minus plain Task, PostgreSQL)",
            "ms",
            [result["added_ms"] for result in results],
            target=f"< {TARGET_MILLISECONDS:g} ms median",
        )
    )
    added.met = added.median < TARGET_MILLISECONDS
    report.add(
        Figure(
            name,
            "LoopTask iteration (empty body), eager apply",
            "ms",
            [result["loop_median_ms"] for result in results],
        )
    )
    report.add(
        Figure(
            name,
            "plain Task iteration (empty body), eager apply",
            "ms",
            [result["plain_median_ms"] for result in results],
        )
    )
