"""Create the initial schema.

Tables: the three outbox tables and their operator audit, currencies, players,
wallets, the wallet ledger, bets, promotion terms and rates, settlement runs
and items, loop health and worker heartbeats.

Revision ID: 0001
Revises:
Create Date: 2026-12-04 19:57:07.644058
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("aggregate_type", sa.String(length=64), nullable=False),
        sa.Column("aggregate_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_agent_outbox_event_id")),
    )
    with op.batch_alter_table("agent_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agent_outbox_aggregate_pending",
            ["aggregate_type", "aggregate_id", "id"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )
        batch_op.create_index(
            "ix_agent_outbox_publishable",
            ["id"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
        )

    op.create_table(
        "currencies",
        sa.Column("code", sa.String(length=3), nullable=False),
        sa.Column("minor_units", sa.SmallInteger(), nullable=False),
        sa.CheckConstraint("minor_units IN (0, 2, 3)", name=op.f("ck_currencies_minor_units")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_currencies")),
    )
    op.create_table(
        "loop_health",
        sa.Column("loop_name", sa.String(length=128), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("running_task_id", sa.String(length=64), nullable=True),
        sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_hostname", sa.String(length=255), nullable=True),
        sa.Column("last_success_summary", sa.JSON(), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_class", sa.String(length=255), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("last_failure_summary", sa.JSON(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("loop_name", name=op.f("pk_loop_health")),
    )
    op.create_table(
        "outbox_operator_actions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_operator_actions")),
    )
    with op.batch_alter_table("outbox_operator_actions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_operator_actions_event_id"), ["event_id"], unique=False
        )

    op.create_table(
        "rolling_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("aggregate_type", sa.String(length=64), nullable=False),
        sa.Column("aggregate_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rolling_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_rolling_outbox_event_id")),
    )
    with op.batch_alter_table("rolling_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rolling_outbox_aggregate_pending",
            ["aggregate_type", "aggregate_id", "id"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )
        batch_op.create_index(
            "ix_rolling_outbox_publishable",
            ["id"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
        )

    op.create_table(
        "settlement_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("eligible_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("credited_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("voided_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("credited_amount_minor", sa.JSON(), nullable=False),
        sa.Column("failed_player_ids", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "kind IN ('rebate', 'cashback', 'lossback')", name=op.f("ck_settlement_runs_kind")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'empty', 'partial', 'failed', 'inconsistent')",
            name=op.f("ck_settlement_runs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_runs")),
    )
    with op.batch_alter_table("settlement_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_settlement_runs_kind_period_key", ["kind", "period_key"], unique=False
        )

    op.create_table(
        "wallet_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("aggregate_type", sa.String(length=64), nullable=False),
        sa.Column("aggregate_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_wallet_outbox_event_id")),
    )
    with op.batch_alter_table("wallet_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_wallet_outbox_aggregate_pending",
            ["aggregate_type", "aggregate_id", "id"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )
        batch_op.create_index(
            "ix_wallet_outbox_publishable",
            ["id"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
        )

    op.create_table(
        "worker_heartbeats",
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ticked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_ready_reason", sa.Text(), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("hostname", name=op.f("pk_worker_heartbeats")),
    )
    op.create_table(
        "players",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("vip_tier", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint("vip_tier >= 0", name=op.f("ck_players_vip_tier")),
        sa.ForeignKeyConstraint(
            ["currency"], ["currencies.code"], name=op.f("fk_players_currency_currencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_players")),
    )
    op.create_table(
        "promotion_terms",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("min_basis_minor", sa.BigInteger(), nullable=False),
        sa.Column("min_payout_minor", sa.BigInteger(), nullable=False),
        sa.Column("cap_minor", sa.BigInteger(), nullable=True),
        sa.Column("counted_categories", sa.JSON(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('rebate', 'cashback', 'lossback')", name=op.f("ck_promotion_terms_kind")
        ),
        sa.CheckConstraint(
            "cap_minor IS NULL OR cap_minor >= min_payout_minor",
            name=op.f("ck_promotion_terms_cap"),
        ),
        sa.CheckConstraint("min_basis_minor >= 0", name=op.f("ck_promotion_terms_min_basis")),
        sa.CheckConstraint("min_payout_minor >= 0", name=op.f("ck_promotion_terms_min_payout")),
        sa.ForeignKeyConstraint(
            ["currency"], ["currencies.code"], name=op.f("fk_promotion_terms_currency_currencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_terms")),
        sa.UniqueConstraint("kind", "currency", name=op.f("uq_promotion_terms_kind_currency")),
    )
    op.create_table(
        "bets",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "player_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("game_category", sa.String(length=32), nullable=False),
        sa.Column("stake_minor", sa.BigInteger(), nullable=False),
        sa.Column("payout_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('settled', 'voided', 'cancelled')", name=op.f("ck_bets_status")
        ),
        sa.CheckConstraint("payout_minor >= 0", name=op.f("ck_bets_payout_not_negative")),
        sa.CheckConstraint(
            "stake_minor > 0 OR payout_minor = 0", name=op.f("ck_bets_payout_needs_stake")
        ),
        sa.CheckConstraint("stake_minor >= 0", name=op.f("ck_bets_stake_not_negative")),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_bets_player_id_players")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bets")),
    )
    with op.batch_alter_table("bets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bets_settled_at_player_id", ["settled_at", "player_id"], unique=False
        )

    op.create_table(
        "promotion_rates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("terms_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("vip_tier", sa.SmallInteger(), nullable=False),
        sa.Column("game_category", sa.String(length=32), nullable=False),
        sa.Column("rate", sa.Numeric(precision=9, scale=6), nullable=False),
        sa.CheckConstraint("rate >= 0 AND rate <= 1", name=op.f("ck_promotion_rates_rate")),
        sa.ForeignKeyConstraint(
            ["terms_id"],
            ["promotion_terms.id"],
            name=op.f("fk_promotion_rates_terms_id_promotion_terms"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_rates")),
        sa.UniqueConstraint(
            "terms_id",
            "vip_tier",
            "game_category",
            name=op.f("uq_promotion_rates_terms_id_vip_tier_game_category"),
        ),
    )
    op.create_table(
        "settlement_items",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column(
            "player_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("basis_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'credited', 'skipped', 'failed', 'voided')",
            name=op.f("ck_settlement_items_status"),
        ),
        sa.ForeignKeyConstraint(
            ["currency"], ["currencies.code"], name=op.f("fk_settlement_items_currency_currencies")
        ),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_settlement_items_player_id_players")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["settlement_runs.id"],
            name=op.f("fk_settlement_items_run_id_settlement_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_items")),
        sa.UniqueConstraint(
            "run_id", "player_id", name=op.f("uq_settlement_items_run_id_player_id")
        ),
    )
    with op.batch_alter_table("settlement_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_settlement_items_kind_period_key_player_id",
            ["kind", "period_key", "player_id"],
            unique=False,
        )

    op.create_table(
        "wallets",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "player_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'closed')", name=op.f("ck_wallets_status")
        ),
        sa.ForeignKeyConstraint(
            ["currency"], ["currencies.code"], name=op.f("fk_wallets_currency_currencies")
        ),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_wallets_player_id_players")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallets")),
        sa.UniqueConstraint("player_id", name=op.f("uq_wallets_player_id")),
    )
    op.create_table(
        "wallet_ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "wallet_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "player_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("entry_type", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_minor <> 0", name=op.f("ck_wallet_ledger_amount_nonzero")),
        sa.ForeignKeyConstraint(
            ["currency"], ["currencies.code"], name=op.f("fk_wallet_ledger_currency_currencies")
        ),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_wallet_ledger_player_id_players")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_ledger_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_ledger")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_wallet_ledger_idempotency_key")),
    )
    with op.batch_alter_table("wallet_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_wallet_ledger_wallet_id_id", ["wallet_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("wallet_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_wallet_ledger_wallet_id_id")

    op.drop_table("wallet_ledger")
    op.drop_table("wallets")
    with op.batch_alter_table("settlement_items", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_items_kind_period_key_player_id")

    op.drop_table("settlement_items")
    op.drop_table("promotion_rates")
    with op.batch_alter_table("bets", schema=None) as batch_op:
        batch_op.drop_index("ix_bets_settled_at_player_id")

    op.drop_table("bets")
    op.drop_table("promotion_terms")
    op.drop_table("players")
    op.drop_table("worker_heartbeats")
    with op.batch_alter_table("wallet_outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_wallet_outbox_publishable",
            postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
        )
        batch_op.drop_index(
            "ix_wallet_outbox_aggregate_pending",
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )

    op.drop_table("wallet_outbox")
    with op.batch_alter_table("settlement_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_runs_kind_period_key")

    op.drop_table("settlement_runs")
    with op.batch_alter_table("rolling_outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_rolling_outbox_publishable",
            postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
        )
        batch_op.drop_index(
            "ix_rolling_outbox_aggregate_pending",
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )

    op.drop_table("rolling_outbox")
    with op.batch_alter_table("outbox_operator_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_operator_actions_event_id"))

    op.drop_table("outbox_operator_actions")
    op.drop_table("loop_health")
    op.drop_table("currencies")
    with op.batch_alter_table("agent_outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_agent_outbox_publishable",
            postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
        )
        batch_op.drop_index(
            "ix_agent_outbox_aggregate_pending",
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )

    op.drop_table("agent_outbox")
