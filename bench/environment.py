"""The machine and the versions a benchmark ran on, for the results page."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.common import POSTGRES_ADMIN_URL, RABBITMQ_URL, REDIS_URL

PACKAGES = ("celery", "kombu", "redis", "sqlalchemy", "psycopg", "amqp")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _postgres_version() -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def _redis_version() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def _rabbitmq_version() -> str:
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=0)
            properties = connection.connection.server_properties
            return str(properties.get("version", "unknown"))
    except Exception as exc:  # noqa: BLE001 - the page says the broker was not reachable
        return f"not reachable ({type(exc).__name__})"


def describe_environment() -> dict[str, str]:
    """Return the machine, server and package versions as label -> text."""
    packages = ", ".join(f"{name} {_package_version(name)}" for name in PACKAGES)
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": _cpu_model(),
        "memory": _memory_total(),
        "Python": platform.python_version(),
        "packages": packages,
        "PostgreSQL": _postgres_version(),
        "Redis": _redis_version(),
        "RabbitMQ": _rabbitmq_version(),
    }
