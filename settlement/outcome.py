"""The outcome of a settlement run and the exception it turns into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.outcome import IterationOutcome
from settlement.errors import (
    SettlementInconsistent,
    SettlementNonDelivery,
    SettlementPartialDelivery,
)

#: Run statuses that count as delivered.
SUCCESS_STATUSES = ("empty", "succeeded")
#: Failed player ids named in an exception message; the summary and run record keep all.
MAX_FAILED_IDS_IN_MESSAGE = 20


@dataclass
class SettlementOutcome(IterationOutcome):
    """A finished settlement run: its status, counts per item status and amounts.

    ``status`` is ``empty`` (no eligible player), ``succeeded``, ``partial``
    (some credits failed), ``failed`` (no credit delivered) or
    ``inconsistent`` (the counts do not add up). ``details`` contains the run id,
    kind, period, credited amounts per currency and all failed player ids.
    """

    status: str = "running"

    @property
    def ok(self) -> bool:
        return self.status in SUCCESS_STATUSES

    @property
    def failed_player_ids(self) -> list[int]:
        return list(self.details.get("failed_player_ids", []))

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "status": self.status}

    def describe(self) -> str:
        kind = self.details.get("kind", "?")
        period_key = self.details.get("period_key", "?")
        run_id = self.details.get("run_id", "?")
        order = ("eligible", "credited", "credited_earlier", "skipped", "failed", "voided")
        counts = " ".join(f"{name}={self.counts.get(name, 0)}" for name in order)
        amounts = self.details.get("credited_amount_minor") or {}
        amount_text = ", ".join(
            f"{amount} {currency}" for currency, amount in sorted(amounts.items())
        )
        text = (
            f"settlement {kind} {period_key} run {run_id} {self.status}: {counts};"
            f" credited minor units: {amount_text or 'none'}"
        )
        failed_ids = self.failed_player_ids
        if failed_ids:
            shown = ", ".join(
                str(player_id) for player_id in failed_ids[:MAX_FAILED_IDS_IN_MESSAGE]
            )
            more = len(failed_ids) - MAX_FAILED_IDS_IN_MESSAGE
            text += f"; failed players: {shown}" + (f" and {more} more" if more > 0 else "")
        error = self.details.get("error")
        if error:
            text += f"; error: {error}"
        return text

    def failure(self) -> SettlementNonDelivery:
        """Return the exception for this outcome's status; its message contains the summary."""
        if self.status == "partial":
            return SettlementPartialDelivery(self.describe(), self.summary())
        if self.status == "inconsistent":
            return SettlementInconsistent(self.describe(), self.summary())
        return SettlementNonDelivery(self.describe(), self.summary())
