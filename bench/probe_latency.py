"""Probe latency: wall time of ``python -m health check`` from process start to exit.

Compared in the same run, on the same stack (PostgreSQL, Redis broker, one
running worker), with ``celery -A app inspect ping -d <worker>`` and with a
bare ``python -c`` that imports psycopg, connects and selects 1 (the floor of
any Python probe that reads the database).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.common import REDIS_URL, Figure, Report, Sizes, apply_environment

TARGET_SECONDS = 0.3
TARGET_TIMES_FASTER_THAN_PING = 2.0
#: Seconds the worker may take to respond to its first ping after it starts.
WORKER_START_TIMEOUT_SECONDS = 60.0
#: Seconds one probe command may take before the benchmark gives up on it.
PROBE_TIMEOUT_SECONDS = 30.0

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

BARE_PSYCOPG_PROBE = (
    "import sys, psycopg\n"
    "with psycopg.connect(sys.argv[1], connect_timeout=5) as connection:\n"
    "    connection.execute('SELECT 1').fetchone()\n"
)


def _probe_environment(database_url: str, var_dir: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        {
            "DATABASE_URL": database_url,
            "BROKER_URL": REDIS_URL,
            "RESULT_BACKEND": "disabled",
            "VAR_DIR": var_dir,
            "LOG_LEVEL": "WARNING",
        }
    )
    return environment


def _timed_command(command: list[str], environment: dict[str, str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
        check=False,
    )
    seconds = time.perf_counter() - started
    return seconds, completed.returncode, (completed.stdout + completed.stderr).strip()


def _mark_loops_fresh(database_url: str) -> None:
    """Record a success for every declared loop, so the check evaluates a ready worker."""
    apply_environment({"DATABASE_URL": database_url})
    from app.settings import get_settings
    from health import freshness
    from health.loops import build_loop_specs

    for loop in build_loop_specs(get_settings()):
        freshness.record_success(loop, {"bench": 1}, "bench", None)


def _start_worker(environment: dict[str, str], node: str) -> subprocess.Popen[bytes]:
    command = [
        str(BIN / "celery"),
        "-A",
        "app",
        "worker",
        "--pool",
        "solo",
        "--hostname",
        node,
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "WARNING",
    ]
    return subprocess.Popen(
        command,
        env=environment,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ping_command(node: str) -> list[str]:
    return [str(BIN / "celery"), "-A", "app", "inspect", "ping", "-d", node]


def _wait_for_worker(environment: dict[str, str], node: str) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        _, status, _ = _timed_command(_ping_command(node), environment)
        if status == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(
        f"worker {node} did not respond to a ping within {WORKER_START_TIMEOUT_SECONDS:g}s"
    )


def measure(database_url: str, runs: int) -> dict[str, Any]:
    """Start a worker, then time each probe ``runs`` times, interleaved."""
    _mark_loops_fresh(database_url)
    var_dir = tempfile.mkdtemp(prefix="bench-probe-")
    environment = _probe_environment(database_url, var_dir)
    node = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}@localhost"
    psycopg_url = database_url.replace("postgresql+psycopg://", "postgresql://")
    commands = {
        "check": [str(BIN / "python"), "-m", "health", "check"],
        "ping": _ping_command(node),
        "bare": [str(BIN / "python"), "-c", BARE_PSYCOPG_PROBE, psycopg_url],
    }

    redis_client = redis.Redis.from_url(REDIS_URL)
    keys_before = set(redis_client.keys("*"))
    worker = _start_worker(environment, node)
    try:
        _wait_for_worker(environment, node)
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        statuses: dict[str, set[int]] = {name: set() for name in commands}
        outputs: dict[str, str] = {}
        for _ in range(runs):
            for name, command in commands.items():
                elapsed, status, output = _timed_command(command, environment)
                seconds[name].append(elapsed)
                statuses[name].add(status)
                outputs[name] = output
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        shutil.rmtree(var_dir, ignore_errors=True)
        # The worker's queues, bindings and pidbox keys; the benchmark's Redis database
        # is private, so every key that appeared since the worker started is its own.
        created = set(redis_client.keys("*")) - keys_before
        if created:
            redis_client.delete(*created)
        redis_client.close()

    if statuses["ping"] != {0} or statuses["bare"] != {0}:
        raise RuntimeError(f"a reference probe failed: {statuses}: {outputs}")
    return {"seconds": seconds, "statuses": statuses, "outputs": outputs}


def run(sizes: Sizes, report: Report, database_url: str) -> None:
    result = measure(database_url, sizes.probe_runs)
    seconds = result["seconds"]
    check_status = sorted(result["statuses"]["check"])

    name = "probe_latency"
    check = report.add(
        Figure(
            name,
            "python -m health check, process start to exit",
            "s",
            seconds["check"],
            target=(
                f"< {TARGET_SECONDS:g} s median and >= {TARGET_TIMES_FASTER_THAN_PING:g}x"
                " faster than inspect ping"
            ),
        )
    )
    ping = report.add(Figure(name, "celery -A app inspect ping -d WORKER", "s", seconds["ping"]))
    report.add(Figure(name, "python -c: import psycopg, connect, SELECT 1", "s", seconds["bare"]))
    times_faster = ping.median / check.median
    check.met = check.median < TARGET_SECONDS and times_faster >= TARGET_TIMES_FASTER_THAN_PING
    check.note = f"{times_faster:.1f}x faster than inspect ping; exit status {check_status}"
    if check_status != [0]:
        check.note += f"; output: {result['outputs']['check'][:300]}"
