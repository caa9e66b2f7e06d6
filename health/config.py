"""The settings the health probes read, taken from the environment without pydantic.

``python -m health check`` must start fast, and importing pydantic-settings
(:mod:`app.settings`) alone costs about 0.2 s. This module reads the same
environment variables with the same defaults and bounds as
:class:`app.settings.Settings`; a test compares the two so they cannot drift.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

#: Largest value of any seconds setting, the same bound as ``PositiveSeconds`` in app.settings.
MAX_SECONDS = 86_400 * 31

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
DATABASE_URL_FORM = "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"
LOSSBACK_PERIODS = ("daily", "weekly")

#: Environment variable to default value, for every setting read here.
DEFAULTS: dict[str, str] = {
    "DATABASE_URL": "sqlite:///var/settlement.sqlite",
    "OUTBOX_POLL_INTERVAL_SECONDS": "5.0",
    "OUTBOX_MAX_AGE_SECONDS": "120.0",
    "SETTLEMENT_GRACE_SECONDS": "10800.0",
    "LOSSBACK_PERIOD": "weekly",
    "TASK_TIME_LIMIT_SECONDS": "600.0",
    "HEARTBEAT_INTERVAL_SECONDS": "10.0",
    "STARTUP_GRACE_SECONDS": "300.0",
}


class HealthConfigError(Exception):
    """An invalid setting, named by its environment variable."""


@dataclass(frozen=True)
class HealthConfig:
    """The subset of :class:`app.settings.Settings` that readiness and liveness need.

    The attribute names match Settings, so :func:`health.loops.build_loop_specs`
    accepts either.
    """

    database_url: str
    outbox_poll_interval_seconds: float
    outbox_max_age_seconds: float
    settlement_grace_seconds: float
    lossback_period: Literal["daily", "weekly"]
    task_time_limit_seconds: float
    heartbeat_interval_seconds: float
    startup_grace_seconds: float


def _lookup(environ: dict[str, str], name: str) -> str:
    """Return the variable's value; names match case-insensitively, like Settings."""
    for key, value in environ.items():
        if key.upper() == name:
            return value
    return DEFAULTS[name]


def _seconds(environ: dict[str, str], name: str) -> float:
    raw = _lookup(environ, name)
    expected = "a number of seconds greater than 0"
    try:
        value = float(raw)
    except ValueError:
        raise HealthConfigError(_invalid(name, raw, expected)) from None
    if not 0 < value <= MAX_SECONDS:
        raise HealthConfigError(_invalid(name, raw, f"{expected} and at most {MAX_SECONDS}"))
    return value


def _invalid(name: str, raw: str, expected: str) -> str:
    from app.redaction import redact

    return f"configuration error: {name}={redact(raw)!r} is invalid: expected {expected}"


def load_health_config(environ: dict[str, str] | None = None) -> HealthConfig:
    """Read the health settings from ``environ`` (the process environment by default).

    Raises HealthConfigError naming the first invalid variable.
    """
    environ = dict(os.environ) if environ is None else environ

    database_url = _lookup(environ, "DATABASE_URL")
    scheme = database_url.split("://", 1)[0].lower() if "://" in database_url else ""
    if scheme not in DATABASE_SCHEMES:
        raise HealthConfigError(_invalid("DATABASE_URL", database_url, DATABASE_URL_FORM))

    lossback_period = _lookup(environ, "LOSSBACK_PERIOD")
    if lossback_period not in LOSSBACK_PERIODS:
        raise HealthConfigError(_invalid("LOSSBACK_PERIOD", lossback_period, "daily or weekly"))

    return HealthConfig(
        database_url=database_url,
        outbox_poll_interval_seconds=_seconds(environ, "OUTBOX_POLL_INTERVAL_SECONDS"),
        outbox_max_age_seconds=_seconds(environ, "OUTBOX_MAX_AGE_SECONDS"),
        settlement_grace_seconds=_seconds(environ, "SETTLEMENT_GRACE_SECONDS"),
        lossback_period="daily" if lossback_period == "daily" else "weekly",
        task_time_limit_seconds=_seconds(environ, "TASK_TIME_LIMIT_SECONDS"),
        heartbeat_interval_seconds=_seconds(environ, "HEARTBEAT_INTERVAL_SECONDS"),
        startup_grace_seconds=_seconds(environ, "STARTUP_GRACE_SECONDS"),
    )
