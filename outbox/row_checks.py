"""Checks of a claimed outbox row before it is published.

``outbox.enqueue`` rejects bad events, but a row written by other means (plain
SQL, or before OUTBOX_MAX_PAYLOAD_BYTES was lowered) can still be one that no
retry will ever publish. The poller parks such a row at once with the reason
and publishes the rest of its batch. Sending it would not only fail: a
payload over Redis's ``proto-max-bulk-len`` makes Redis close the connection,
which fails every other message of the batch as well.
"""

from __future__ import annotations

import json

from outbox.publisher import OutboxMessage

#: Prefix of the error stored on a row parked by these checks.
UNPUBLISHABLE = "unpublishable"


def _payload_size_bytes(message: OutboxMessage) -> int:
    """Return the payload's size as JSON; raises TypeError or ValueError if it is not JSON."""
    if message.payload_json is not None:
        return len(message.payload_json.encode("utf-8"))
    encoded = json.dumps(message.payload, allow_nan=False, separators=(",", ":"))
    return len(encoded.encode("utf-8"))


def unpublishable_reason(message: OutboxMessage, max_payload_bytes: int) -> str | None:
    """Return why ``message`` can never be published, or None when it may be sent."""
    if not message.event_type or not message.event_type.strip():
        return f"{UNPUBLISHABLE}: missing event type (it is the routing key)"

    try:
        size = _payload_size_bytes(message)
    except (TypeError, ValueError) as exc:
        return f"{UNPUBLISHABLE}: payload is not JSON-serializable: {exc}"

    if size > max_payload_bytes:
        return (
            f"{UNPUBLISHABLE}: payload is {size} bytes as JSON, over"
            f" OUTBOX_MAX_PAYLOAD_BYTES={max_payload_bytes}"
        )
    return None
