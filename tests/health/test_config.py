"""The light health settings agree with app.settings, which the workers use."""

from __future__ import annotations

import pytest

from app.settings import Settings
from health import metrics, snapshot
from health.config import DEFAULTS, HealthConfig, HealthConfigError, load_health_config
from health.loops import build_loop_specs
from outbox.models import PUBLISHABLE_WHERE
from settlement.models import ITEM_STATUSES, RUN_STATUSES


def test_defaults_match_settings() -> None:
    for variable, default in DEFAULTS.items():
        field = Settings.model_fields[variable.lower()]
        assert str(field.default) == default, variable


def test_health_config_fields_match_settings() -> None:
    for name in HealthConfig.__dataclass_fields__:
        assert name in Settings.model_fields, name


def test_loop_specs_same_from_both_settings() -> None:
    environ = {"OUTBOX_MAX_AGE_SECONDS": "7", "LOSSBACK_PERIOD": "daily"}

    light = build_loop_specs(load_health_config(environ))
    full = build_loop_specs(Settings.model_validate({k.lower(): v for k, v in environ.items()}))

    assert light == full


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OUTBOX_MAX_AGE_SECONDS", "soon"),
        ("OUTBOX_MAX_AGE_SECONDS", "0"),
        ("HEARTBEAT_INTERVAL_SECONDS", "99999999"),
        ("LOSSBACK_PERIOD", "monthly"),
        ("DATABASE_URL", "mysql://db/x"),
    ],
)
def test_invalid_value_rejected_by_both(variable: str, value: str) -> None:
    with pytest.raises(HealthConfigError) as caught:
        load_health_config({variable: value})

    assert str(caught.value).startswith(f"configuration error: {variable}=")
    with pytest.raises(ValueError):
        Settings.model_validate({variable.lower(): value})


def test_invalid_url_password_masked() -> None:
    with pytest.raises(HealthConfigError) as caught:
        load_health_config({"DATABASE_URL": "mysql://svc:hunter2@db/x"})

    assert "hunter2" not in str(caught.value)


def test_sql_conditions_match_models() -> None:
    assert snapshot.PUBLISHABLE_WHERE == PUBLISHABLE_WHERE
    assert metrics.RUN_STATUSES == RUN_STATUSES
    assert metrics.ITEM_STATUSES == ITEM_STATUSES
