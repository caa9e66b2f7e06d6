"""The wallet gateway: credits written to the ledger, the balances and the wallet outbox.

:class:`LedgerGateway` credits a whole batch with a fixed number of
statements in the caller's transaction. On PostgreSQL there are three: one
``SELECT ... FOR UPDATE`` of the wallets, one statement that inserts the
ledger rows (skipping idempotency keys already present) and adds the new
ones to the balances, and one ``INSERT ... SELECT`` of the outbox events.
The rows travel as one JSON array per statement. SQLite uses a multi-row
ledger insert, ``UPDATE wallets ... FROM (VALUES ...)`` and
:func:`~outbox.enqueue.enqueue_many`. The caller (:mod:`settlement.crediting`)
owns the transaction, the retries and the fallback to smaller batches.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.json_text import json_string
from outbox.enqueue import OutboxEvent, enqueue_encoded, enqueue_many
from settlement.models import LedgerEntry, Wallet

#: Outbox stream and event type of a wallet credit.
WALLET_STREAM = "wallet"
CREDIT_EVENT_TYPE = "wallet.credited"
#: Namespace of the credit events' UUIDv5 ids, so an event id follows from its idempotency key.
CREDIT_EVENT_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4b59-9a57-2f0f3c8e7d41")
#: Wallet status that can take a credit; suspended and closed wallets are skipped.
CREDITABLE_WALLET_STATUS = "active"
#: Rows per statement in the balance update, which binds two parameters per row.
MAX_ROWS_PER_UPDATE = 5_000

CreditStatus = Literal["credited", "already_credited", "skipped", "failed"]


def idempotency_key(kind: str, period_key: str, player_id: int) -> str:
    """Return the ledger idempotency key of one settlement credit: ``kind:period:player``."""
    return f"{kind}:{period_key}:{player_id}"


@dataclass(frozen=True)
class Credit:
    """One credit to write; ``item_id`` is its settlement item."""

    item_id: int
    run_id: int
    kind: str
    period_key: str
    player_id: int
    currency: str
    amount_minor: int
    idempotency_key: str


@dataclass(frozen=True)
class CreditResult:
    """The outcome of one credit.

    ``already_credited`` means a ledger row with the idempotency key existed,
    so nothing was written and the player counts as credited.
    """

    status: CreditStatus
    reason: str | None = None
    error: str | None = None
    ledger_entry_id: int | None = None


class WalletGateway(Protocol):
    """Credits a batch in the caller's transaction.

    Returns one result per credit, keyed by item id. Raising means the whole
    batch failed, and the caller rolls it back.
    """

    def credit_batch(self, session: Session, credits: Sequence[Credit]) -> dict[int, CreditResult]:
        """Credit ``credits`` in ``session``'s transaction."""
        ...


class WalletState(Protocol):
    """The wallet columns a credit is checked against."""

    @property
    def id(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def currency(self) -> str: ...


def wallet_rejection(
    player_id: int, currency: str, wallet: WalletState | None
) -> CreditResult | None:
    """Return why ``wallet`` cannot take a credit in ``currency``, or None when it can.

    A missing wallet or another currency is a failure; a suspended or closed
    wallet is a business reason to skip the player.
    """
    if wallet is None:
        return CreditResult("failed", error=f"wallet not found for player {player_id}")
    if wallet.currency != currency:
        return CreditResult(
            "failed", error=f"wallet {wallet.id} is in {wallet.currency}, the credit in {currency}"
        )
    if wallet.status != CREDITABLE_WALLET_STATUS:
        return CreditResult(
            "skipped", reason=f"wallet_{wallet.status}: wallet {wallet.id} is {wallet.status}"
        )
    return None


def _creditable(
    credits: Sequence[Credit],
    wallets: Mapping[int, WalletState],
    results: dict[int, CreditResult],
) -> list[tuple[Credit, int]]:
    """Return (credit, wallet id) for each credit its wallet accepts.

    Each rejected credit gets its result in ``results`` instead.
    """
    creditable: list[tuple[Credit, int]] = []
    for credit in credits:
        wallet = wallets.get(credit.player_id)
        rejection = wallet_rejection(credit.player_id, credit.currency, wallet)
        if rejection is not None:
            results[credit.item_id] = rejection
        elif wallet is not None:
            creditable.append((credit, wallet.id))
    return creditable


class LedgerGateway:
    """The wallet gateway on this database's ``wallets`` and ``wallet_ledger`` tables."""

    def credit_batch(self, session: Session, credits: Sequence[Credit]) -> dict[int, CreditResult]:
        if session.get_bind().dialect.name == "postgresql":
            return _credit_batch_postgresql(session, credits)
        results: dict[int, CreditResult] = {}
        wallets = _lock_wallets(session, [credit.player_id for credit in credits])

        creditable = _creditable(credits, wallets, results)

        inserted = _insert_ledger_entries(session, creditable)
        new_credits = [
            (credit, wallet_id)
            for credit, wallet_id in creditable
            if credit.idempotency_key in inserted
        ]
        balances = _add_to_balances(session, new_credits)
        _enqueue_credit_events(session, new_credits, inserted, balances)

        for credit, _wallet_id in creditable:
            entry_id = inserted.get(credit.idempotency_key)
            if entry_id is None:
                results[credit.item_id] = CreditResult(
                    "already_credited",
                    reason=f"ledger entry {credit.idempotency_key} already exists",
                )
            else:
                results[credit.item_id] = CreditResult("credited", ledger_entry_id=entry_id)
        return results


@dataclass(frozen=True)
class _WalletRow:
    id: int
    status: str
    currency: str


def _lock_wallets(session: Session, player_ids: list[int]) -> dict[int, _WalletRow]:
    """Lock the players' wallets in id order, so concurrent batches do not deadlock on them."""
    query = (
        select(Wallet.id, Wallet.player_id, Wallet.status, Wallet.currency)
        .where(Wallet.player_id.in_(player_ids))
        .order_by(Wallet.id)
        .with_for_update()
    )
    return {
        player_id: _WalletRow(wallet_id, status, currency)
        for wallet_id, player_id, status, currency in session.execute(query)
    }


def _insert_ledger_entries(
    session: Session, creditable: list[tuple[Credit, int]]
) -> dict[str, int]:
    """Insert the ledger rows, skipping existing idempotency keys; returns key -> new entry id."""
    if not creditable:
        return {}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(LedgerEntry)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(LedgerEntry.id, LedgerEntry.idempotency_key)
    )
    rows = [
        {
            "wallet_id": wallet_id,
            "player_id": credit.player_id,
            "amount_minor": credit.amount_minor,
            "currency": credit.currency,
            "entry_type": credit.kind,
            "idempotency_key": credit.idempotency_key,
            "reference": f"settlement_run:{credit.run_id}",
        }
        for credit, wallet_id in creditable
    ]
    result = session.execute(statement, rows)
    return {key: entry_id for entry_id, key in result}


def _add_to_balances(session: Session, new_credits: list[tuple[Credit, int]]) -> dict[int, int]:
    """Add each amount to its wallet's balance; returns wallet id -> new balance."""
    balances: dict[int, int] = {}
    for start in range(0, len(new_credits), MAX_ROWS_PER_UPDATE):
        chunk = new_credits[start : start + MAX_ROWS_PER_UPDATE]
        values_sql = ", ".join(
            f"(CAST(:w{index} AS BIGINT), CAST(:a{index} AS BIGINT))" for index in range(len(chunk))
        )
        params: dict[str, Any] = {}
        for index, (credit, wallet_id) in enumerate(chunk):
            params[f"w{index}"] = wallet_id
            params[f"a{index}"] = credit.amount_minor
        # VALUES columns are named column1, column2 on both PostgreSQL and SQLite.
        # The interpolated text holds only generated placeholder names, never values.
        statement = text(
            "UPDATE wallets AS w"  # noqa: S608
            " SET balance_minor = w.balance_minor + v.column2, updated_at = CURRENT_TIMESTAMP"
            f" FROM (VALUES {values_sql}) AS v"
            " WHERE w.id = v.column1"
            " RETURNING id, balance_minor"
        )
        for wallet_id, balance_minor in session.execute(statement, params):
            balances[int(wallet_id)] = int(balance_minor)
    return balances


def _enqueue_credit_events(
    session: Session,
    new_credits: list[tuple[Credit, int]],
    entry_ids: dict[str, int],
    balances: dict[int, int],
) -> None:
    events = [
        OutboxEvent(
            aggregate_type="wallet",
            aggregate_id=str(wallet_id),
            event_type=CREDIT_EVENT_TYPE,
            payload={
                "wallet_id": wallet_id,
                "player_id": credit.player_id,
                "ledger_entry_id": entry_ids[credit.idempotency_key],
                "amount_minor": credit.amount_minor,
                "currency": credit.currency,
                "balance_minor": balances[wallet_id],
                "entry_type": credit.kind,
                "idempotency_key": credit.idempotency_key,
                "settlement": {
                    "kind": credit.kind,
                    "period_key": credit.period_key,
                    "run_id": credit.run_id,
                },
            },
            headers={"idempotency_key": credit.idempotency_key},
            event_id=uuid.uuid5(CREDIT_EVENT_NAMESPACE, credit.idempotency_key),
        )
        for credit, wallet_id in new_credits
    ]
    enqueue_many(session, WALLET_STREAM, events)


#: The wallets of a batch, locked in id order (PostgreSQL). The player ids arrive as one
#: JSON array, so the statement text does not grow with the batch.
_LOCK_WALLETS = text(
    "SELECT id, player_id, status, currency FROM wallets"
    " WHERE player_id IN"
    " (SELECT CAST(jsonb_array_elements_text(CAST(:player_ids AS jsonb)) AS bigint))"
    " ORDER BY id FOR UPDATE"
)

#: The ledger rows and balance changes of a batch in one statement (PostgreSQL). The rows
#: arrive as one JSON array of arrays, which the database parses much faster than the
#: driver escapes array parameters. Keys that already have a ledger row are skipped, so
#: only new entries change a balance. The wallets were locked by _LOCK_WALLETS, and this
#: statement's snapshot is taken after that, so each balance is added to the latest
#: committed value. A wallet appears at most once per batch: wallets.player_id is
#: unique, and so is an item's (run_id, player_id).
_JSON_CREDIT = text(
    "WITH entry AS ("
    " INSERT INTO wallet_ledger"
    " (wallet_id, player_id, amount_minor, currency, entry_type, idempotency_key, reference)"
    " SELECT CAST(r->>0 AS bigint), CAST(r->>1 AS bigint), CAST(r->>2 AS bigint), r->>3,"
    " r->>4, r->>5, r->>6"
    " FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r"
    " ON CONFLICT (idempotency_key) DO NOTHING"
    " RETURNING id, wallet_id, amount_minor, idempotency_key"
    "), balance AS ("
    " UPDATE wallets AS w"
    " SET balance_minor = w.balance_minor + entry.amount_minor, updated_at = CURRENT_TIMESTAMP"
    " FROM entry WHERE w.id = entry.wallet_id"
    " RETURNING w.id, w.balance_minor"
    ")"
    " SELECT entry.idempotency_key, entry.id, balance.balance_minor"
    " FROM entry JOIN balance ON balance.id = entry.wallet_id"
)


def _credit_batch_postgresql(
    session: Session, credits: Sequence[Credit]
) -> dict[int, CreditResult]:
    """Credit a batch in three statements: lock, ledger rows with balances, then events."""
    results: dict[int, CreditResult] = {}
    wallets = {
        player_id: _WalletRow(wallet_id, status, currency)
        for wallet_id, player_id, status, currency in session.execute(
            _LOCK_WALLETS, {"player_ids": json.dumps([credit.player_id for credit in credits])}
        )
    }

    creditable = _creditable(credits, wallets, results)
    if not creditable:
        return results

    rows = [
        (
            wallet_id,
            credit.player_id,
            credit.amount_minor,
            credit.currency,
            credit.kind,
            credit.idempotency_key,
            f"settlement_run:{credit.run_id}",
        )
        for credit, wallet_id in creditable
    ]
    written = {
        key: (int(entry_id), int(balance_minor))
        for key, entry_id, balance_minor in session.execute(
            _JSON_CREDIT, {"rows": json.dumps(rows, separators=(",", ":"))}
        )
    }

    event_ids: list[uuid.UUID] = []
    aggregate_ids: list[str] = []
    payloads: list[str] = []
    headers: list[str] = []
    for credit, wallet_id in creditable:
        entry = written.get(credit.idempotency_key)
        if entry is None:
            results[credit.item_id] = CreditResult(
                "already_credited",
                reason=f"ledger entry {credit.idempotency_key} already exists",
            )
            continue
        entry_id, balance_minor = entry
        results[credit.item_id] = CreditResult("credited", ledger_entry_id=entry_id)
        key_json = json_string(credit.idempotency_key)
        event_ids.append(uuid.uuid5(CREDIT_EVENT_NAMESPACE, credit.idempotency_key))
        aggregate_ids.append(str(wallet_id))
        payloads.append(credit_payload_json(credit, wallet_id, entry_id, balance_minor, key_json))
        headers.append(f'{{"idempotency_key":{key_json}}}')

    enqueue_encoded(
        session,
        WALLET_STREAM,
        aggregate_type="wallet",
        event_type=CREDIT_EVENT_TYPE,
        event_ids=event_ids,
        aggregate_ids=aggregate_ids,
        payloads_json=payloads,
        headers_json=headers,
    )
    return results


def credit_payload_json(
    credit: Credit, wallet_id: int, entry_id: int, balance_minor: int, key_json: str | None = None
) -> str:
    """Return the credit event's payload as compact JSON text.

    It is the text ``json.dumps(payload, separators=(",", ":"))`` writes for the
    payload that :func:`_enqueue_credit_events` builds, formatted directly
    because that is several times faster per event.
    """
    kind_json = json_string(credit.kind)
    if key_json is None:
        key_json = json_string(credit.idempotency_key)
    return (
        f'{{"wallet_id":{int(wallet_id)},"player_id":{int(credit.player_id)},'
        f'"ledger_entry_id":{int(entry_id)},"amount_minor":{int(credit.amount_minor)},'
        f'"currency":{json_string(credit.currency)},"balance_minor":{int(balance_minor)},'
        f'"entry_type":{kind_json},"idempotency_key":{key_json},'
        f'"settlement":{{"kind":{kind_json},"period_key":{json_string(credit.period_key)},'
        f'"run_id":{int(credit.run_id)}}}}}'
    )
