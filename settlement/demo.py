"""Generate a realistic, deterministic data set: ``python -m settlement.demo``.

The same seed and options always give the same rows. By default there are
20,000 players over six VIP tiers and three currencies (KRW has 0 decimals).
They have 1,000,000 bets settled over the 14 days before today in the business
time zone, with heavy-tailed stakes, a house edge per game category and about
1% voided bets. Some wallets are closed or suspended. Promotion terms exist for
every kind, and each outbox stream has a backlog.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, select, text

from app.db import get_engine, transaction
from app.logs import configure_logging
from app.progress import Progress
from app.schema import metadata
from app.settings import get_settings, settings_or_exit
from outbox.enqueue import OutboxEvent, enqueue_many
from settlement.models import (
    Bet,
    Currency,
    Player,
    PromotionRate,
    PromotionTerms,
    Wallet,
)

logger = logging.getLogger(__name__)

DEFAULT_SEED = 20261204
DEFAULT_PLAYERS = 20_000
DEFAULT_BETS = 1_000_000
DEFAULT_DAYS = 14
DEFAULT_OUTBOX_BACKLOG = 2_000
#: Rows sent to the database per insert or COPY chunk.
CHUNK_ROWS = 20_000

#: Currency code, minor units, share of players, typical stake in major units.
CURRENCIES = (("PHP", 2, 0.55, 150.0), ("USD", 2, 0.30, 5.0), ("KRW", 0, 0.15, 4_000.0))

#: VIP tier, share of players, stake multiplier, bets-per-player weight.
VIP_TIERS = (
    (0, 0.55, 1.0, 1.0),
    (1, 0.22, 1.8, 1.6),
    (2, 0.12, 3.0, 2.4),
    (3, 0.07, 6.0, 3.5),
    (4, 0.03, 12.0, 5.0),
    (5, 0.01, 30.0, 8.0),
)


@dataclass(frozen=True)
class GameCategory:
    """A category's share of bets, house edge and the chance that a bet pays anything."""

    name: str
    share: float
    house_edge: float
    win_probability: float


CATEGORIES = (
    GameCategory("slots", 0.45, 0.040, 0.28),
    GameCategory("live_casino", 0.20, 0.020, 0.47),
    GameCategory("sports", 0.15, 0.055, 0.45),
    GameCategory("table", 0.12, 0.015, 0.48),
    GameCategory("fishing", 0.08, 0.030, 0.35),
)

VOIDED_SHARE = 0.01
CANCELLED_SHARE = 0.002
CLOSED_WALLET_SHARE = 0.01
SUSPENDED_WALLET_SHARE = 0.01

#: Rebate rate by VIP tier, on valid turnover; the same in every category but sports.
REBATE_RATES = ("0.0020", "0.0030", "0.0040", "0.0060", "0.0080", "0.0100")
REBATE_SPORTS_RATES = ("0.0010", "0.0015", "0.0020", "0.0030", "0.0040", "0.0050")
CASHBACK_RATES = ("0.0500", "0.0600", "0.0800", "0.1000", "0.1200", "0.1500")
LOSSBACK_RATES = ("0.0300", "0.0400", "0.0500", "0.0600", "0.0800", "0.1000")
LOSSBACK_CATEGORIES = ["live_casino", "table"]

#: Minimum basis, minimum payout and cap per kind, in major units of USD; scaled per currency.
TERMS_USD = {
    "rebate": (10.0, 0.10, 500.0),
    "cashback": (20.0, 1.00, 1_000.0),
    "lossback": (20.0, 1.00, 300.0),
}


def _weighted(rng: random.Random, options: Sequence[float]) -> int:
    return rng.choices(range(len(options)), weights=options)[0]


def _scale_to_currency(usd_amount: float, currency: str) -> float:
    usd_value = {"PHP": 1 / 57.0, "USD": 1.0, "KRW": 1 / 1_400.0}[currency]
    return usd_amount / usd_value


@dataclass(frozen=True)
class PlayerProfile:
    player_id: int
    currency: str
    minor_units: int
    vip_tier: int
    typical_stake: float
    activity: float


def _players(rng: random.Random, count: int, first_id: int) -> list[PlayerProfile]:
    profiles = []
    currency_shares = [share for _, _, share, _ in CURRENCIES]
    tier_shares = [share for _, share, _, _ in VIP_TIERS]
    for offset in range(count):
        code, minor_units, _, stake = CURRENCIES[_weighted(rng, currency_shares)]
        tier, _, multiplier, activity = VIP_TIERS[_weighted(rng, tier_shares)]
        profiles.append(
            PlayerProfile(
                player_id=first_id + offset,
                currency=code,
                minor_units=minor_units,
                vip_tier=tier,
                typical_stake=stake * multiplier,
                # A lognormal activity level gives a few very busy players.
                activity=activity * rng.lognormvariate(0.0, 0.8),
            )
        )
    return profiles


def _bet_rows(
    rng: random.Random, players: list[PlayerProfile], count: int, start: datetime, days: int
) -> Iterator[tuple[object, ...]]:
    """Yield bet rows in (player_id, category, stake, payout, status, placed, settled) order."""
    span_seconds = days * 86_400
    # Draw all players and categories up front: one weighted draw per bet would
    # scan the whole weight list each time.
    player_draws = rng.choices(players, weights=[p.activity for p in players], k=count)
    category_draws = rng.choices(CATEGORIES, weights=[c.share for c in CATEGORIES], k=count)
    for player, category in zip(player_draws, category_draws, strict=True):
        # Stakes follow a lognormal with a heavy right tail.
        stake_major = player.typical_stake * rng.lognormvariate(-0.5, 1.1)
        scale = 10**player.minor_units
        stake_minor = max(1, int(stake_major * scale))

        # A win pays so that the expected return is (1 - house edge) of the stake.
        payout_minor = 0
        if rng.random() < category.win_probability:
            mean_multiple = (1 - category.house_edge) / category.win_probability
            payout_minor = int(stake_minor * mean_multiple * rng.expovariate(1.0))

        draw = rng.random()
        status = "settled"
        if draw < VOIDED_SHARE:
            status, payout_minor = "voided", 0
        elif draw < VOIDED_SHARE + CANCELLED_SHARE:
            status, payout_minor = "cancelled", 0

        placed = start + timedelta(seconds=rng.uniform(0, span_seconds - 120))
        settled = placed + timedelta(seconds=rng.uniform(1, 90))
        yield (player.player_id, category.name, stake_minor, payout_minor, status, placed, settled)


def _terms_rows(currency: str, minor_units: int) -> list[dict[str, object]]:
    rows = []
    for kind, (min_basis, min_payout, cap) in TERMS_USD.items():
        scale = 10**minor_units
        rows.append(
            {
                "kind": kind,
                "currency": currency,
                "min_basis_minor": int(_scale_to_currency(min_basis, currency) * scale),
                "min_payout_minor": max(1, int(_scale_to_currency(min_payout, currency) * scale)),
                "cap_minor": int(_scale_to_currency(cap, currency) * scale),
                "counted_categories": LOSSBACK_CATEGORIES if kind == "lossback" else None,
                "active": True,
            }
        )
    return rows


def _rate_for(kind: str, tier: int, category: str) -> str:
    if kind == "rebate":
        return REBATE_SPORTS_RATES[tier] if category == "sports" else REBATE_RATES[tier]
    if kind == "cashback":
        return CASHBACK_RATES[tier]
    return LOSSBACK_RATES[tier]


def _insert_reference_data(
    rng: random.Random, connection: Connection, players: list[PlayerProfile]
) -> None:
    connection.execute(
        insert(Currency), [{"code": code, "minor_units": units} for code, units, _, _ in CURRENCIES]
    )
    for code, minor_units, _, _ in CURRENCIES:
        for terms in _terms_rows(code, minor_units):
            terms_id = connection.execute(
                insert(PromotionTerms).values(**terms).returning(PromotionTerms.id)
            ).scalar_one()
            connection.execute(
                insert(PromotionRate),
                [
                    {
                        "terms_id": terms_id,
                        "vip_tier": tier,
                        "game_category": category.name,
                        "rate": _rate_for(str(terms["kind"]), tier, category.name),
                    }
                    for tier, _, _, _ in VIP_TIERS
                    for category in CATEGORIES
                ],
            )

    progress = Progress("players and wallets", len(players))
    for start in range(0, len(players), CHUNK_ROWS):
        chunk = players[start : start + CHUNK_ROWS]
        connection.execute(
            insert(Player),
            [{"id": p.player_id, "currency": p.currency, "vip_tier": p.vip_tier} for p in chunk],
        )
        wallets = []
        for player in chunk:
            draw = rng.random()
            status = "active"
            if draw < CLOSED_WALLET_SHARE:
                status = "closed"
            elif draw < CLOSED_WALLET_SHARE + SUSPENDED_WALLET_SHARE:
                status = "suspended"
            opening_balance = int(player.typical_stake * 20 * 10**player.minor_units)
            wallets.append(
                {
                    "player_id": player.player_id,
                    "currency": player.currency,
                    "balance_minor": opening_balance,
                    "status": status,
                }
            )
        connection.execute(insert(Wallet), wallets)
        progress.advance(len(chunk))
    progress.finish()


BET_COLUMNS = (
    "player_id",
    "game_category",
    "stake_minor",
    "payout_minor",
    "status",
    "placed_at",
    "settled_at",
)


def _insert_bets(engine: Engine, rows: Iterator[tuple[object, ...]], total: int) -> None:
    progress = Progress("bets", total)
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            copy_sql = f"COPY bets ({', '.join(BET_COLUMNS)}) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for index, row in enumerate(rows, start=1):
                    copy.write_row(row)
                    if index % CHUNK_ROWS == 0:
                        progress.advance(CHUNK_ROWS)
            raw.commit()
        finally:
            raw.close()
        progress.advance(total - progress.done)
    else:
        chunk: list[dict[str, object]] = []
        for row in rows:
            chunk.append(dict(zip(BET_COLUMNS, row, strict=True)))
            if len(chunk) == CHUNK_ROWS:
                with transaction(engine) as session:
                    session.execute(insert(Bet), chunk)
                progress.advance(len(chunk))
                chunk = []
        if chunk:
            with transaction(engine) as session:
                session.execute(insert(Bet), chunk)
            progress.advance(len(chunk))
    progress.finish()


def _insert_outbox_backlog(
    rng: random.Random, players: list[PlayerProfile], per_stream: int
) -> None:
    streams = {
        "wallet": ("wallet", "wallet.balance_changed"),
        "rolling": ("player", "rolling.commission_accrued"),
        "agent": ("agent", "agent.commission_settled"),
    }
    progress = Progress("outbox backlog", per_stream * len(streams))
    for stream, (aggregate_type, event_type) in streams.items():
        for start in range(0, per_stream, CHUNK_ROWS):
            count = min(CHUNK_ROWS, per_stream - start)
            events = []
            for _ in range(count):
                player = players[rng.randrange(len(players))]
                aggregate_id = str(player.player_id if stream != "agent" else player.player_id % 97)
                events.append(
                    OutboxEvent(
                        aggregate_type=aggregate_type,
                        aggregate_id=aggregate_id,
                        event_type=event_type,
                        payload={
                            "player_id": player.player_id,
                            "currency": player.currency,
                            "amount_minor": rng.randrange(1, 100_000),
                        },
                    )
                )
            with transaction() as session:
                enqueue_many(session, stream, events)
            progress.advance(count)
    progress.finish()


def _analyze(engine: Engine) -> None:
    """Refresh the planner statistics after the bulk load, as a DBA would.

    Without it PostgreSQL plans the first settlement with the estimates of an
    empty table until autovacuum gets to it.
    """
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()


def is_empty(engine: Engine) -> bool:
    """True when the database has no players yet."""
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Player)).scalar_one() == 0


def clear(engine: Engine) -> None:
    """Delete every row of every table, for ``--reset``."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(table.name for table in metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                connection.execute(table.delete())


def generate(
    *,
    seed: int = DEFAULT_SEED,
    players: int = DEFAULT_PLAYERS,
    bets: int = DEFAULT_BETS,
    days: int = DEFAULT_DAYS,
    outbox_backlog: int = DEFAULT_OUTBOX_BACKLOG,
    end: datetime | None = None,
) -> None:
    """Write the data set into an empty database; bets end at ``end`` (default: today's start).

    ``end`` defaults to midnight today in the business time zone, so the last
    complete daily and weekly periods have bets.
    """
    engine = get_engine()
    if not is_empty(engine):
        raise RuntimeError("the database already has players; run with --reset to replace them")

    if end is None:
        zone = get_settings().timezone
        local_today = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        end = local_today.astimezone(UTC)
    start = end - timedelta(days=days)

    rng = random.Random(seed)
    profiles = _players(rng, players, first_id=1)
    with engine.begin() as connection:
        _insert_reference_data(rng, connection, profiles)
    _insert_bets(engine, _bet_rows(rng, profiles, bets, start, days), bets)
    _insert_outbox_backlog(rng, profiles, outbox_backlog)
    _analyze(engine)
    logger.info(
        "generated %d players, %d bets from %s to %s, %d outbox events per stream (seed %d)",
        players,
        bets,
        start.isoformat(),
        end.isoformat(),
        outbox_backlog,
        seed,
    )


def _positive(text_value: str) -> int:
    value = int(text_value)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text_value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m settlement.demo", description="Generate a deterministic demo data set."
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--players", type=_positive, default=DEFAULT_PLAYERS, help="player count")
    parser.add_argument("--bets", type=_positive, default=DEFAULT_BETS, help="bet count")
    parser.add_argument(
        "--days", type=_positive, default=DEFAULT_DAYS, help="days of bets before today"
    )
    parser.add_argument(
        "--outbox-backlog",
        type=_positive,
        default=DEFAULT_OUTBOX_BACKLOG,
        help="unpublished events written to each outbox stream",
    )
    parser.add_argument(
        "--if-empty", action="store_true", help="do nothing when the database already has players"
    )
    parser.add_argument("--reset", action="store_true", help="delete all rows first")
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    engine = get_engine()
    if args.reset:
        clear(engine)
    elif not is_empty(engine):
        if args.if_empty:
            print("database already has data; nothing generated")
            return 0
        print("the database already has players; use --reset to replace them", file=sys.stderr)
        return 1
    if args.players == 0 or args.days == 0:
        print("--players and --days must be at least 1", file=sys.stderr)
        return 2

    generate(
        seed=args.seed,
        players=args.players,
        bets=args.bets,
        days=args.days,
        outbox_backlog=args.outbox_backlog,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
