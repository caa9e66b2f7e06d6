"""Per-player, per-category totals of a period, summed by the database.

Bets are never loaded into Python: one grouped query returns a row per
player and game category, and those rows become :class:`PlayerActivity`.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from settlement.calculation import CategoryTotals, PlayerActivity
from settlement.models import Bet, Player
from settlement.periods import Period

#: Bet status whose stake and payout count; voided and cancelled bets are left out.
COUNTED_BET_STATUS = "settled"
#: Grouped rows fetched from the database per round trip.
ACTIVITY_FETCH_ROWS = 10_000


def iter_activity(session: Session, period: Period) -> Iterator[PlayerActivity]:
    """Yield the activity of every player with a settled bet in ``period``, by player id.

    A bet belongs to the period in which it was settled (``settled_at`` in
    ``[start, end)``).
    """
    query = (
        select(
            Bet.player_id,
            Player.currency,
            Player.vip_tier,
            Player.status,
            Bet.game_category,
            func.sum(Bet.stake_minor),
            func.sum(Bet.payout_minor),
        )
        .join(Player, Player.id == Bet.player_id)
        .where(
            Bet.status == COUNTED_BET_STATUS,
            Bet.settled_at >= period.start,
            Bet.settled_at < period.end,
        )
        .group_by(Bet.player_id, Player.currency, Player.vip_tier, Player.status, Bet.game_category)
        .order_by(Bet.player_id, Bet.game_category)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Every row is fetched, so plan for the whole result. With the default
        # (0.1) PostgreSQL may pick a fast-start nested loop for the cursor that
        # yield_per opens, which is far slower when the row estimates are off.
        session.execute(text("SET LOCAL cursor_tuple_fraction = 1.0"))
    # A Core execution on the session's connection: the rows are plain tuples, without
    # the ORM's per-row loading work.
    rows = session.connection().execute(query.execution_options(yield_per=ACTIVITY_FETCH_ROWS))

    current: PlayerActivity | None = None
    categories: list[CategoryTotals] = []
    for player_id, currency, vip_tier, status, category, stake, payout in rows:
        if current is not None and current.player_id != player_id:
            yield _with_categories(current, categories)
            categories = []
        if current is None or current.player_id != player_id:
            current = PlayerActivity(player_id, currency, vip_tier, status, ())
        categories.append(CategoryTotals(category, int(stake), int(payout)))
    if current is not None:
        yield _with_categories(current, categories)


def _with_categories(activity: PlayerActivity, categories: list[CategoryTotals]) -> PlayerActivity:
    return PlayerActivity(
        activity.player_id, activity.currency, activity.vip_tier, activity.status, tuple(categories)
    )
