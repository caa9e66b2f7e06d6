"""The three outbox tables; they share one set of columns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from app.db import Base, UtcDateTime

#: JSON on SQLite, JSONB on PostgreSQL.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")
#: 64-bit ids that still autoincrement on SQLite, where only INTEGER PRIMARY KEY does.
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: Rows a poller may still publish: not yet published and not parked.
PUBLISHABLE_WHERE = "published_at IS NULL AND parked_at IS NULL"


class OutboxColumns:
    """Columns and indexes shared by every outbox table."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, unique=True)
    aggregate_type: Mapped[str] = mapped_column(String(64), nullable=False)
    aggregate_id: Mapped[str] = mapped_column(String(128), nullable=False)
    event_type: Mapped[str] = mapped_column(String(128), nullable=False)
    payload: Mapped[Any] = mapped_column(JsonDocument, nullable=False)
    headers: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, nullable=False, server_default=func.current_timestamp()
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    parked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: Set when an operator discards a parked row; the row stays for audit.
    discarded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        name = cls.__tablename__  # type: ignore[attr-defined]
        return (
            Index(
                f"ix_{name}_publishable",
                "id",
                postgresql_where=text(PUBLISHABLE_WHERE),
                sqlite_where=text(PUBLISHABLE_WHERE),
            ),
            Index(
                f"ix_{name}_aggregate_pending",
                "aggregate_type",
                "aggregate_id",
                "id",
                postgresql_where=text("published_at IS NULL"),
                sqlite_where=text("published_at IS NULL"),
            ),
        )


class WalletOutbox(OutboxColumns, Base):
    __tablename__ = "wallet_outbox"


class RollingOutbox(OutboxColumns, Base):
    __tablename__ = "rolling_outbox"


class AgentOutbox(OutboxColumns, Base):
    __tablename__ = "agent_outbox"


#: Stream name to its table's model.
OUTBOX_MODELS: dict[str, type[OutboxColumns]] = {
    "wallet": WalletOutbox,
    "rolling": RollingOutbox,
    "agent": AgentOutbox,
}


class OutboxOperatorAction(Base):
    """Audit row of an operator's requeue or discard of a parked outbox row."""

    __tablename__ = "outbox_operator_actions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(32), nullable=False)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, nullable=False, server_default=func.current_timestamp()
    )
