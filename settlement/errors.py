"""Settlement exceptions; each carries the run summary."""

from __future__ import annotations

from app.outcome import IterationFailure


class SettlementNonDelivery(IterationFailure):
    """A settlement run in which no eligible credit was delivered.

    Raised after the run record is written; ``summary`` has the counts, the
    amounts and the failed player ids.
    """


class SettlementPartialDelivery(SettlementNonDelivery):
    """A settlement run in which some credits failed and the others were committed."""


class SettlementInconsistent(SettlementNonDelivery):
    """A settlement run whose item counts do not add up to the eligible count."""


class SettlementRunBusy(SettlementNonDelivery):
    """Another run of the same kind and period held the run lock for longer than the wait."""


class InvalidPeriod(ValueError):
    """A period text that is malformed, of the wrong length for the kind, or not yet over."""


class InvalidTerms(ValueError):
    """Promotion terms that cannot be applied, such as a negative rate or a cap too low."""
