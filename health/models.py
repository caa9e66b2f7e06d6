"""Loop freshness records and worker heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime


class LoopHealth(Base):
    """Last start, success and failure of one critical loop; times come from the database clock."""

    __tablename__ = "loop_health"

    loop_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: Task id of the iteration that started last; cleared when it finishes.
    running_task_id: Mapped[str | None] = mapped_column(String(64))
    last_finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_hostname: Mapped[str | None] = mapped_column(String(255))
    last_success_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error_class: Mapped[str | None] = mapped_column(String(255))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    last_failure_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class WorkerHeartbeat(Base):
    """One row per worker hostname.

    ``heartbeat_at`` moves only while the worker is ready; ``ticked_at`` moves
    on every timer tick and is the liveness signal.
    """

    __tablename__ = "worker_heartbeats"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    queues: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    ticked_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    not_ready_reason: Mapped[str | None] = mapped_column(Text)
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
