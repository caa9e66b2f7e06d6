"""The stack that verify_failures.py breaks: database, Redis, worker, beat and exporter.

Every process gets an environment built here (PATH, HOME and locale from
the caller, the rest set below), so no DATABASE_URL or BROKER_URL of the
caller's shell can point it elsewhere. Every address is on 127.0.0.1. Each
process and command writes its output to a file in the stack's log folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CELERY = str(Path(sys.executable).with_name("celery"))

#: Maintenance database of the local PostgreSQL server; the stack creates and drops its own.
POSTGRES_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
LOOPBACK_HOST = "127.0.0.1"
DATABASE_NAME_PREFIX = "sw_verify_failures"

#: Freshness budget of each outbox loop, in seconds: small, so a stopped loop shows quickly.
OUTBOX_MAX_AGE_SECONDS = 3
OUTBOX_POLL_INTERVAL_SECONDS = 0.5
#: Seconds between worker heartbeat ticks; liveness allows three missed ticks.
HEARTBEAT_INTERVAL_SECONDS = 2
#: Variables of the caller's environment that the stack's processes inherit.
INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "TMPDIR")

#: Seconds a started Redis may take to respond to PING, and a stopped process to exit.
START_TIMEOUT_SECONDS = 30.0
EXIT_TIMEOUT_SECONDS = 15.0
#: Seconds between two polls of a bounded wait.
POLL_INTERVAL_SECONDS = 0.5
#: Seconds one CLI command may run before it counts as hung.
COMMAND_TIMEOUT_SECONDS = 120.0
#: Seconds one /metrics request may take.
SCRAPE_TIMEOUT_SECONDS = 5.0

#: Celery queues of the project, and kombu's Redis hash of delivered, unacknowledged messages.
CELERY_QUEUES = ("celery", "outbox", "settlement")
KOMBU_UNACKED_KEY = "unacked"

#: Metric samples keyed by metric name and sorted (label, value) pairs.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK_HOST, 0))
        return int(sock.getsockname()[1])


def poll(probe: Callable[[], tuple[bool, str]], timeout_seconds: float) -> tuple[bool, str, float]:
    """Call ``probe`` until it returns True or the timeout passes.

    Returns whether it succeeded, what it saw last and the seconds waited.
    """
    started = time.monotonic()
    while True:
        ok, seen = probe()
        waited = time.monotonic() - started
        if ok or waited >= timeout_seconds:
            return ok, seen, waited
        time.sleep(POLL_INTERVAL_SECONDS)


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    """Return the value of the sample ``name`` with exactly ``labels``, or None when absent."""
    return samples.get((name, tuple(sorted(labels.items()))))


class ManagedProcess:
    """A child process in its own process group, with its combined output in a file."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def pause(self) -> None:
        """Stop the process with SIGSTOP; it keeps its connections but does nothing."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            os.kill(self.process.pid, signal.SIGCONT)

    def terminate(self) -> int | None:
        """Send SIGTERM to the process and wait; return its exit status, or None if it hung."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> bool:
        """SIGKILL the process group (prefork children too) and reap it; True once it exited."""
        if self.alive():
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=EXIT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return False
        finally:
            self._log.close()
        return True


@dataclass
class CommandResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """Return stdout parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None

    def last_line(self) -> str:
        lines = (self.stdout or self.stderr).strip().splitlines()
        return lines[-1] if lines else "no output"


class Stack:
    """The database, broker, worker, beat and exporter of one verification run."""

    def __init__(self, work_dir: Path) -> None:
        self.log_dir = work_dir / "logs"
        self.redis_dir = work_dir / "redis"
        self.var_dir = work_dir / "var"
        for folder in (self.log_dir, self.redis_dir, self.var_dir):
            folder.mkdir()

        self.database_name = f"{DATABASE_NAME_PREFIX}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.database_url = (
            make_url(POSTGRES_ADMIN_URL)
            .set(database=self.database_name)
            .render_as_string(hide_password=False)
        )
        self.redis_port = free_port()
        self.exporter_port = free_port()
        self.worker_hostname = f"verify-failures-{os.getpid()}@localhost"

        self.redis: ManagedProcess | None = None
        self.worker: ManagedProcess | None = None
        self.beat: ManagedProcess | None = None
        self.exporter: ManagedProcess | None = None
        self._database_created = False
        self._engine: Engine | None = None
        self._log_count = 0

    @property
    def broker_url(self) -> str:
        return f"redis://{LOOPBACK_HOST}:{self.redis_port}/0"

    def environment(self) -> dict[str, str]:
        """Return the environment of every process and command of the stack."""
        env = {name: value for name, value in os.environ.items() if name in INHERITED_VARIABLES}
        env.update(
            {
                "PYTHONPATH": str(PROJECT_ROOT),
                "PYTHONUNBUFFERED": "1",
                "DATABASE_URL": self.database_url,
                "BROKER_URL": self.broker_url,
                "RESULT_BACKEND": "disabled",
                "VAR_DIR": str(self.var_dir),
                "BUSINESS_TIMEZONE": "UTC",
                "LOG_LEVEL": "INFO",
                "OUTBOX_DESTINATIONS": "",
                "OUTBOX_MAX_AGE_SECONDS": str(OUTBOX_MAX_AGE_SECONDS),
                "OUTBOX_POLL_INTERVAL_SECONDS": str(OUTBOX_POLL_INTERVAL_SECONDS),
                "HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_INTERVAL_SECONDS),
            }
        )
        return env

    def _new_log(self, label: str) -> Path:
        self._log_count += 1
        return self.log_dir / f"{self._log_count:03d}-{label}.log"

    def run(self, label: str, *args: str) -> CommandResult:
        """Run a command to its end and keep its output in the log folder."""
        command = list(args)
        try:
            completed = subprocess.run(
                command,
                env=self.environment(),
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_SECONDS,
            )
            result = CommandResult(
                command, completed.returncode, completed.stdout, completed.stderr
            )
        except subprocess.TimeoutExpired as exc:
            result = CommandResult(command, -1, "", f"timed out: {exc}")

        self._new_log(label).write_text(
            f"$ {' '.join(command)}\nexit {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n"
        )
        return result

    def python(self, label: str, module: str, *args: str) -> CommandResult:
        """Run ``python -m module ARGS`` with the project's interpreter."""
        return self.run(label, PYTHON, "-m", module, *args)

    def _start(self, label: str, args: list[str]) -> ManagedProcess:
        return ManagedProcess(args, self.environment(), self._new_log(label))

    # Database

    def create_database(self) -> None:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{self.database_name}"'))
            self._database_created = True
        finally:
            admin.dispose()

    @property
    def engine(self) -> Engine:
        """The script's own connection pool to the stack's database."""
        if self._engine is None:
            self._engine = create_engine(self.database_url, pool_pre_ping=True)
        return self._engine

    def drop_database(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if not self._database_created:
            return
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                statement = f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)'
                connection.execute(text(statement))
            self._database_created = False
        finally:
            admin.dispose()

    # Broker

    def start_redis(self) -> bool:
        """Start redis-server on the stack's port, no persistence; True once it responds to PING."""
        args = ["redis-server", "--port", str(self.redis_port), "--bind", LOOPBACK_HOST]
        args += ["--dir", str(self.redis_dir), "--save", "", "--appendonly", "no"]
        self.redis = self._start("redis-server", args)
        ok, _, _ = poll(self._redis_answers, START_TIMEOUT_SECONDS)
        return ok

    def kill_redis(self) -> None:
        """Kill Redis at once (SIGKILL): its queues are lost, as in a crash without persistence."""
        if self.redis is not None:
            self.redis.kill()
            self.redis = None

    def broker_idle(self) -> tuple[bool, str]:
        """Return whether the Celery queues are empty and no message is unacknowledged.

        The key names are those of kombu's Redis transport without a key prefix.
        """
        try:
            with self.redis_client() as client:
                queued = sum(int(client.llen(queue)) for queue in CELERY_QUEUES)
                unacked = int(client.hlen(KOMBU_UNACKED_KEY))
        except redis.RedisError as exc:
            return False, f"Redis not readable: {exc}"
        return queued == 0 and unacked == 0, f"{queued} queued, {unacked} unacknowledged"

    def redis_client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK_HOST, port=self.redis_port, socket_timeout=5)

    def _redis_answers(self) -> tuple[bool, str]:
        try:
            with self.redis_client() as client:
                return bool(client.ping()), "PONG"
        except redis.RedisError as exc:
            return False, str(exc)

    # Celery and the exporter

    def start_worker(self) -> None:
        args = [CELERY, "-A", "app", "worker", "--loglevel", "INFO", "--concurrency", "2"]
        args += ["--hostname", self.worker_hostname]
        self.worker = self._start("worker", args)

    def start_beat(self) -> None:
        schedule = str(self.var_dir / "celerybeat-schedule")
        args = [CELERY, "-A", "app", "beat", "--loglevel", "INFO", "--schedule", schedule]
        self.beat = self._start("beat", args)

    def start_exporter(self) -> None:
        args = [PYTHON, "-m", "health", "serve", "--host", LOOPBACK_HOST]
        args += ["--port", str(self.exporter_port)]
        self.exporter = self._start("health-serve", args)

    def scrape_metrics(self) -> Samples:
        """Return every sample on the exporter's /metrics; {} when it cannot be read."""
        url = f"http://{LOOPBACK_HOST}:{self.exporter_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:
                body = response.read().decode()
        except OSError:
            return {}

        samples: Samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    # Clean-up

    def close(self, keep_logs: Path | None) -> list[str]:
        """Kill every process, drop the database and copy the logs; return what went wrong.

        Each step runs even when an earlier one failed.
        """
        problems = []
        for name in ("beat", "worker", "exporter", "redis"):
            process: ManagedProcess | None = getattr(self, name)
            if process is not None and not process.kill():
                problems.append(f"{name} (pid {process.process.pid}) did not exit after SIGKILL")
            setattr(self, name, None)

        try:
            self.drop_database()
        except Exception as exc:  # noqa: BLE001 - clean-up goes on and reports the error
            problems.append(f"dropping database {self.database_name} failed: {exc}")

        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for path in sorted(self.log_dir.iterdir()):
                shutil.copy2(path, keep_logs / path.name)
        return problems
