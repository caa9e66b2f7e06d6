"""Shared pieces of the benchmarks: sizes, private servers, child processes and statistics."""

from __future__ import annotations

import os
import resource
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

#: PostgreSQL server database used only to create and drop the private benchmark database.
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/postgres"
)
#: Redis database of the benchmarks. The test suite uses databases 1 to 15, so 0 is the default.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: Prefix of every Redis key and broker queue a benchmark creates.
QUEUE_PREFIX = "bench."


@dataclass(frozen=True)
class Sizes:
    """Row counts of one benchmark mode; ``runs`` is the number of timed runs per figure."""

    name: str
    runs: int
    outbox_rows: int
    #: Rows of the per-message kombu baseline, which runs at about 3,000 messages/s.
    outbox_per_message_rows: int
    rabbitmq_rows: int
    settlement_players: int
    probe_runs: int
    freshness_iterations: int


QUICK = Sizes("quick", 3, 600, 300, 300, 200, 3, 30)
#: The spec's 200,000 outbox rows. Settlement runs on a fifth of the spec's 100,000 players,
#: because its six runs at 100,000 players take about 3 minutes on a 2-core machine.
DEFAULT = Sizes("default", 3, 200_000, 20_000, 20_000, 20_000, 7, 300)
FULL = Sizes("full", 3, 200_000, 50_000, 50_000, 100_000, 11, 1_000)


@dataclass
class Figure:
    """One measured figure: the value of every run, its unit, and the target it is held to."""

    benchmark: str
    name: str
    unit: str
    values: list[float]
    target: str = ""
    #: True or False when the figure has a target, None when it is only context.
    met: bool | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.values), max(self.values))


@dataclass
class Report:
    """Every figure of a benchmark run plus free text (profiles, settings used)."""

    figures: list[Figure] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)
    #: Raw results of child runs by label, for figures computed from several benchmarks.
    raw: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu_seconds() -> float:
    """Return the user plus system CPU seconds this process has used, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: Clock ticks per second of the counters in /proc/stat.
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def machine_busy_cpu_seconds() -> float:
    """Return the CPU seconds all processes of this machine have used since boot (Linux).

    It is the sum of the first line of /proc/stat without idle and iowait, so
    the difference over a run includes the database server's work.
    """
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / CLOCK_TICKS_PER_SECOND


def timed(phases: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``function`` wrapped so that each call adds its wall time to ``phases[name]``."""

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - started

    return timed_call


def run_in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``function(*args)`` in a fresh spawned process and return its result.

    A fresh process per run keeps one run's imports, caches and peak memory
    out of the next run's figures.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def apply_environment(environment: dict[str, str]) -> None:
    """Set the settings' environment variables in this process and drop cached settings."""
    from app import db as app_db
    from app.settings import get_settings

    os.environ.update(environment)
    get_settings.cache_clear()
    app_db.dispose_engines()


@contextmanager
def private_postgres(label: str) -> Iterator[str]:
    """Yield the URL of a new, migrated database ``bench_<label>_<id>``, dropped at the end."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from app import migrate

    name = f"bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def load_average() -> float:
    return os.getloadavg()[0]
