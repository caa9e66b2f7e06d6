"""Settlement periods in the business time zone.

Rebate settles daily, cashback weekly (Monday to Sunday) and lossback daily or
weekly as the ``LOSSBACK_PERIOD`` setting chooses. A period is named by its key: an ISO date
(``2026-12-03``) for daily periods and an ISO week (``2026-W49``) for weekly
ones. Its bounds are local midnights converted to UTC, so a day with a
daylight-saving change is 23 or 25 hours long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from settlement.errors import InvalidPeriod

PeriodLength = Literal["daily", "weekly"]

SETTLEMENT_KINDS = ("rebate", "cashback", "lossback")

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_WEEK = re.compile(r"^(?P<year>\d{4})-W(?P<week>\d{2})$")


@dataclass(frozen=True)
class Period:
    """One settlement period: its key and its bounds as aware UTC, end exclusive."""

    length: PeriodLength
    key: str
    start: datetime
    end: datetime


def period_length(kind: str, lossback_period: PeriodLength) -> PeriodLength:
    """Return whether ``kind`` settles daily or weekly; raises ValueError for an unknown kind."""
    if kind == "rebate":
        return "daily"
    if kind == "cashback":
        return "weekly"
    if kind == "lossback":
        return lossback_period
    raise ValueError(
        f"unknown settlement kind {kind!r}: expected one of rebate, cashback, lossback"
    )


def _local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _daily(day: date, zone: ZoneInfo) -> Period:
    return Period(
        length="daily",
        key=day.isoformat(),
        start=_local_midnight_utc(day, zone),
        end=_local_midnight_utc(day + timedelta(days=1), zone),
    )


def _weekly(monday: date, zone: ZoneInfo) -> Period:
    year, week, _ = monday.isocalendar()
    return Period(
        length="weekly",
        key=f"{year}-W{week:02d}",
        start=_local_midnight_utc(monday, zone),
        end=_local_midnight_utc(monday + timedelta(days=7), zone),
    )


def parse_period(text: str, length: PeriodLength, zone: ZoneInfo) -> Period:
    """Return the period named by ``text``; raises InvalidPeriod for a malformed key."""
    text = text.strip()
    week_match = _ISO_WEEK.match(text)

    if length == "daily":
        if week_match:
            raise InvalidPeriod(f"period {text!r} is a week, but this kind settles daily periods")
        if not _ISO_DATE.match(text):
            raise InvalidPeriod(f"invalid period {text!r}: expected an ISO date such as 2026-12-03")
        try:
            day = date.fromisoformat(text)
        except ValueError as exc:
            raise InvalidPeriod(f"invalid period {text!r}: {exc}") from None
        return _daily(day, zone)

    if week_match is None:
        hint = ""
        if _ISO_DATE.match(text):
            try:
                year, week, _ = date.fromisoformat(text).isocalendar()
                hint = f" (the week containing {text} is {year}-W{week:02d})"
            except ValueError:
                hint = ""
        raise InvalidPeriod(
            f"invalid period {text!r}: this kind settles weekly periods,"
            f" expected an ISO week such as 2026-W49{hint}"
        )
    try:
        monday = date.fromisocalendar(int(week_match["year"]), int(week_match["week"]), 1)
    except ValueError as exc:
        raise InvalidPeriod(f"invalid period {text!r}: {exc}") from None
    return _weekly(monday, zone)


def last_complete_period(length: PeriodLength, now: datetime, zone: ZoneInfo) -> Period:
    """Return the latest period that ended at or before ``now`` (aware)."""
    today = now.astimezone(zone).date()
    if length == "daily":
        return _daily(today - timedelta(days=1), zone)
    this_monday = today - timedelta(days=today.weekday())
    return _weekly(this_monday - timedelta(days=7), zone)


def resolve_period(
    kind: str,
    text: str | None,
    *,
    now: datetime,
    zone: ZoneInfo,
    lossback_period: PeriodLength,
) -> Period:
    """Return the period to settle: ``text`` if given, else the last complete one.

    Raises InvalidPeriod when ``text`` is malformed or names a period that has
    not ended at ``now``, because settling it early would pay on part of the
    period and the idempotency key would then block the rest.
    """
    length = period_length(kind, lossback_period)
    if text is None or not text.strip():
        return last_complete_period(length, now, zone)

    period = parse_period(text, length, zone)
    if period.end > now:
        local_end = period.end.astimezone(zone).isoformat()
        raise InvalidPeriod(
            f"period {period.key} has not ended yet: it ends at {local_end};"
            " settle it after that time"
        )
    return period
