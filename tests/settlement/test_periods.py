"""Daily and weekly periods in the business time zone, and the default period."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from settlement.errors import InvalidPeriod
from settlement.periods import (
    last_complete_period,
    parse_period,
    period_length,
    resolve_period,
)

UTC_ZONE = ZoneInfo("UTC")
MANILA = ZoneInfo("Asia/Manila")
NEW_YORK = ZoneInfo("America/New_York")


def test_parse_daily_utc() -> None:
    period = parse_period("2026-12-03", "daily", UTC_ZONE)

    assert period.key == "2026-12-03"
    assert period.start == datetime(2026, 12, 3, tzinfo=UTC)
    assert period.end == datetime(2026, 12, 4, tzinfo=UTC)


def test_parse_daily_in_manila() -> None:
    period = parse_period("2026-12-03", "daily", MANILA)

    assert period.start == datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
    assert period.end == datetime(2026, 12, 3, 16, 0, tzinfo=UTC)


def test_parse_daily_dst_start_is_23_hours() -> None:
    period = parse_period("2026-03-08", "daily", NEW_YORK)

    assert period.start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert period.end == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)


def test_parse_weekly_monday_to_sunday() -> None:
    period = parse_period("2026-W49", "weekly", UTC_ZONE)

    assert period.key == "2026-W49"
    assert period.start == datetime(2026, 11, 30, tzinfo=UTC)
    assert period.end == datetime(2026, 12, 7, tzinfo=UTC)


def test_parse_weekly_in_manila() -> None:
    period = parse_period("2026-W01", "weekly", MANILA)

    assert period.start == datetime(2025, 12, 28, 16, 0, tzinfo=UTC)
    assert period.end == datetime(2026, 1, 4, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "length", "message"),
    [
        ("2026-13-01", "daily", "month must be in 1..12"),
        ("yesterday", "daily", "expected an ISO date such as 2026-12-03"),
        ("2026-W49", "daily", "is a week, but this kind settles daily periods"),
        ("2026-12-03", "weekly", "the week containing 2026-12-03 is 2026-W49"),
        ("2026-W54", "weekly", "invalid period '2026-W54'"),
        ("2026-49", "weekly", "expected an ISO week such as 2026-W49"),
    ],
)
def test_parse_invalid_period_raises(text: str, length: str, message: str) -> None:
    with pytest.raises(InvalidPeriod, match=message):
        parse_period(text, length, UTC_ZONE)  # type: ignore[arg-type]


def test_last_complete_daily_is_yesterday() -> None:
    now = datetime(2026, 12, 4, 0, 30, tzinfo=UTC)

    assert last_complete_period("daily", now, UTC_ZONE).key == "2026-12-03"


def test_last_complete_daily_uses_local_date() -> None:
    # 2026-12-03 23:30 UTC is already 2026-12-04 07:30 in Manila.
    now = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)

    assert last_complete_period("daily", now, MANILA).key == "2026-12-03"
    assert last_complete_period("daily", now, UTC_ZONE).key == "2026-12-02"


def test_last_complete_weekly_is_previous_week() -> None:
    friday = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    monday_morning = datetime(2026, 11, 30, 0, 5, tzinfo=UTC)

    assert last_complete_period("weekly", friday, UTC_ZONE).key == "2026-W48"
    assert last_complete_period("weekly", monday_morning, UTC_ZONE).key == "2026-W48"


def test_resolve_unfinished_period_raises() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    with pytest.raises(InvalidPeriod, match="period 2026-12-04 has not ended yet"):
        resolve_period("rebate", "2026-12-04", now=now, zone=UTC_ZONE, lossback_period="weekly")
    with pytest.raises(InvalidPeriod, match="period 2026-W49 has not ended yet"):
        resolve_period("cashback", "2026-W49", now=now, zone=UTC_ZONE, lossback_period="weekly")


def test_resolve_without_text_is_last_complete() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    rebate = resolve_period("rebate", None, now=now, zone=UTC_ZONE, lossback_period="weekly")
    lossback = resolve_period("lossback", "", now=now, zone=UTC_ZONE, lossback_period="daily")

    assert rebate.key == "2026-12-03"
    assert lossback.key == "2026-12-03"


def test_period_length_by_kind() -> None:
    assert period_length("rebate", "weekly") == "daily"
    assert period_length("cashback", "daily") == "weekly"
    assert period_length("lossback", "daily") == "daily"
    assert period_length("lossback", "weekly") == "weekly"
    with pytest.raises(ValueError, match="unknown settlement kind 'bonus'"):
        period_length("bonus", "weekly")
