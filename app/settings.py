"""Settings read from environment variables and validated once at start-up.

Every process (worker, beat, the CLIs) calls :func:`settings_or_exit`, so a bad
value stops it with one line that names the variable, the value with any
password masked, and the expected form.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Exit status of worker, beat and the CLIs on a configuration error (sysexits EX_CONFIG).
EXIT_CONFIG_ERROR = 78

DATABASE_URL_FORM = "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"
BROKER_URL_FORM = (
    "redis://[:PASSWORD@]HOST:PORT/DB, amqp://USER:PASSWORD@HOST:PORT/VHOST or filesystem://"
)
RESULT_BACKEND_FORM = (
    "redis://HOST:PORT/DB, db+postgresql+psycopg://..., db+sqlite:///PATH or disabled"
)

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
BROKER_SCHEMES = ("redis", "rediss", "amqp", "pyamqp", "amqps", "filesystem")
RESULT_BACKEND_SCHEMES = ("redis", "rediss", "db+sqlite", "db+postgresql", "db+postgresql+psycopg")

OUTBOX_DESTINATIONS_FORM = (
    "STREAM:QUEUE=BINDING_KEY[,BINDING_KEY...] entries separated by ';', with STREAM one of"
    " wallet, rolling, agent (example: wallet:wallet.ledger=wallet.#;agent:agents=#)"
)
_DESTINATION_ENTRY = r"\s*(wallet|rolling|agent):[\w.\-]+=[\w.#*\-]+(,[\w.#*\-]+)*\s*"
OUTBOX_DESTINATIONS_PATTERN = rf"^\s*$|^{_DESTINATION_ENTRY}(;{_DESTINATION_ENTRY})*;?\s*$"

PositiveSeconds = Annotated[float, Field(gt=0, le=86_400 * 31)]
BatchSize = Annotated[int, Field(ge=1, le=100_000)]


class ConfigurationError(Exception):
    """One invalid or missing setting, named by its environment variable."""

    def __init__(self, variable: str, value: str | None, expected: str) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        shown = " is missing" if value is None else f"={value!r} is invalid"
        super().__init__(f"configuration error: {variable}{shown}: expected {expected}")


def mask_url(url: str) -> str:
    """Return ``url`` with the password replaced by ``***``; other text is kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _url_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


class Settings(BaseSettings):
    """Process configuration; each field is read from the upper-case environment variable."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    database_url: str = Field(
        "sqlite:///var/settlement.sqlite",
        description="SQLAlchemy URL of the application database.",
        json_schema_extra={"expected": DATABASE_URL_FORM},
    )
    broker_url: str = Field(
        "filesystem://",
        description="Celery broker URL; filesystem:// keeps messages under VAR_DIR/broker.",
        json_schema_extra={"expected": BROKER_URL_FORM},
    )
    result_backend: str = Field(
        "db+sqlite:///var/celery-results.sqlite",
        description="Celery result backend URL, or 'disabled' to store no task results.",
        json_schema_extra={"expected": RESULT_BACKEND_FORM},
    )
    var_dir: Path = Field(
        Path("var"),
        description="Directory for the embedded broker's files and worker state.",
        json_schema_extra={"expected": "a writable directory path"},
    )
    business_timezone: str = Field(
        "UTC",
        description="IANA time zone in which settlement periods start and end.",
        json_schema_extra={"expected": "an IANA time zone name such as Asia/Manila"},
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Minimum level of log records written.",
        json_schema_extra={"expected": "one of DEBUG, INFO, WARNING, ERROR"},
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log line format: human-readable text or one JSON object per line.",
        json_schema_extra={"expected": "text or json"},
    )

    outbox_poll_interval_seconds: PositiveSeconds = Field(
        5.0,
        description="Seconds between beat ticks of each outbox poller.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )
    outbox_max_age_seconds: PositiveSeconds = Field(
        120.0,
        description="Freshness budget of each outbox poller, in seconds since its last success.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )
    outbox_batch_size: BatchSize = Field(
        1000,
        description="Rows claimed per outbox poll batch.",
        json_schema_extra={"expected": "a whole number from 1 to 100000"},
    )
    outbox_drain_budget_seconds: PositiveSeconds = Field(
        30.0,
        description="Seconds one poller run keeps claiming batches before it returns.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )
    outbox_max_attempts: Annotated[int, Field(ge=1, le=1000)] = Field(
        10,
        description="Failed publish attempts after which an outbox row is parked.",
        json_schema_extra={"expected": "a whole number from 1 to 1000"},
    )
    outbox_max_payload_bytes: Annotated[int, Field(ge=256, le=64 * 1024 * 1024)] = Field(
        256 * 1024,
        description="Largest JSON payload, in bytes, that enqueue accepts.",
        json_schema_extra={"expected": "a whole number of bytes from 256 to 67108864"},
    )
    outbox_destinations: str = Field(
        "",
        pattern=OUTBOX_DESTINATIONS_PATTERN,
        description=(
            "Destination queues of outbox streams and their binding keys; a stream not"
            " listed gets one queue outbox.STREAM.events bound with '#'."
        ),
        json_schema_extra={"expected": OUTBOX_DESTINATIONS_FORM},
    )
    broker_timeout_seconds: PositiveSeconds = Field(
        5.0,
        description="Seconds a broker connect or publish may take before it counts as failed.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )

    settlement_batch_size: BatchSize = Field(
        500,
        description="Settlement items credited per batch.",
        json_schema_extra={"expected": "a whole number from 1 to 100000"},
    )
    settlement_credit_workers: Annotated[int, Field(ge=1, le=16)] = Field(
        2,
        description=(
            "Settlement batches credited at the same time, each in its own transaction;"
            " PostgreSQL only, SQLite credits one at a time."
        ),
        json_schema_extra={"expected": "a whole number from 1 to 16"},
    )
    settlement_grace_seconds: PositiveSeconds = Field(
        3 * 3600.0,
        description="Seconds added to a settlement's period to form its freshness budget.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )
    lossback_period: Literal["daily", "weekly"] = Field(
        "weekly",
        description="Length of a lossback period.",
        json_schema_extra={"expected": "daily or weekly"},
    )

    task_soft_time_limit_seconds: PositiveSeconds = Field(
        540.0,
        description="Seconds after which a running task gets SoftTimeLimitExceeded.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )
    task_time_limit_seconds: PositiveSeconds = Field(
        600.0,
        description="Seconds after which a running task's process is killed.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )
    heartbeat_interval_seconds: PositiveSeconds = Field(
        10.0,
        description="Seconds between worker readiness evaluations and heartbeat refreshes.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )
    startup_grace_seconds: PositiveSeconds = Field(
        300.0,
        description="Seconds after a worker starts during which a loop with no success is allowed.",
        json_schema_extra={"expected": "a number of seconds greater than 0"},
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, url: str) -> str:
        if _url_scheme(url) not in DATABASE_SCHEMES:
            raise ValueError(DATABASE_URL_FORM)
        return url

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, url: str) -> str:
        if _url_scheme(url) not in BROKER_SCHEMES:
            raise ValueError(BROKER_URL_FORM)
        return url

    @field_validator("result_backend")
    @classmethod
    def _check_result_backend(cls, url: str) -> str:
        if url != "disabled" and _url_scheme(url) not in RESULT_BACKEND_SCHEMES:
            raise ValueError(RESULT_BACKEND_FORM)
        return url

    @field_validator("business_timezone")
    @classmethod
    def _check_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("an IANA time zone name such as Asia/Manila") from exc
        return name

    @property
    def sqlalchemy_database_url(self) -> str:
        """Return the database URL with the psycopg 3 driver named for PostgreSQL."""
        if _url_scheme(self.database_url) == "postgresql":
            return "postgresql+psycopg" + self.database_url[len("postgresql") :]
        return self.database_url

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.business_timezone)

    @property
    def is_embedded(self) -> bool:
        """True when the broker needs no server (the default, runnable on a fresh machine)."""
        return _url_scheme(self.broker_url) == "filesystem"


def _expected_form(field_name: str, pydantic_message: str) -> str:
    field = Settings.model_fields.get(field_name)
    extra = field.json_schema_extra if field is not None else None
    if isinstance(extra, dict) and isinstance(extra.get("expected"), str):
        return str(extra["expected"])
    return pydantic_message


def _shown_value(raw: Any) -> str:
    text = str(raw)
    return mask_url(text) if "://" in text else text


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (the process environment by default).

    Raises ConfigurationError for the first invalid variable, with any password masked.
    """
    try:
        if environ is None:
            return Settings()
        return _settings_from_mapping(environ)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = str(first["loc"][0]) if first["loc"] else "?"
        raw = first.get("input")
        value = None if first["type"] == "missing" else _shown_value(raw)
        raise ConfigurationError(
            field_name.upper(), value, _expected_form(field_name, first["msg"])
        ) from None


class _MappingSettings(Settings):
    """Settings read from an explicit mapping only, ignoring the process environment."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: Any, *_sources: Any, **_: Any
    ) -> tuple[Any, ...]:
        return (init_settings,)


def _settings_from_mapping(environ: dict[str, str]) -> Settings:
    names = {name.upper(): name for name in Settings.model_fields}
    values = {names[key.upper()]: value for key, value in environ.items() if key.upper() in names}
    return _MappingSettings.model_validate(values)


@functools.cache
def get_settings() -> Settings:
    """Return the process settings, loaded once; raises ConfigurationError."""
    return load_settings()


def settings_or_exit(exit_code: int = EXIT_CONFIG_ERROR) -> Settings:
    """Return the settings, or print the one-line error to stderr and exit with ``exit_code``."""
    try:
        return get_settings()
    except ConfigurationError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(exit_code) from None
