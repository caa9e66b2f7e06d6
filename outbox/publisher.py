"""Publishers: send a batch of outbox messages to the broker and report each one's fate.

A message counts as accepted only when the broker took it:

* RabbitMQ (``amqp://``): publisher confirms and ``mandatory``; a message the
  broker returned as unroutable, nacked, or did not confirm in time failed.
* Redis (``redis://``): the LPUSH onto every bound queue returned a length.
* Embedded (``filesystem://``): the message file was written to every bound queue.

On Redis and the embedded broker kombu drops a message that matches no
binding without an error, so these publishers look the bindings up themselves
and fail such a message as unroutable.

Every message has the event id as message id and the event type as routing
key. It is persistent, its body is the payload as JSON, and its headers carry
the aggregate, the event type and the created time. A plain kombu consumer reads it.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple

from amqp.exceptions import MessageNacked
from kombu import Connection, Exchange, Producer, Queue, binding
from kombu.exceptions import KombuError

from app import embedded_broker
from app.json_text import json_string
from app.redaction import describe_error
from app.settings import Settings
from outbox.streams import EXCHANGE_TYPE, StreamRoute

logger = logging.getLogger(__name__)

#: AMQP delivery mode 2: the broker writes the message to disk.
PERSISTENT_DELIVERY_MODE = 2
JSON_CONTENT_TYPE = "application/json"
JSON_CONTENT_ENCODING = "utf-8"


class PublishStatus(enum.Enum):
    ACCEPTED = "accepted"
    FAILED = "failed"
    #: Not sent, because the batch's publish deadline passed or the connection broke first.
    NOT_SENT = "not_sent"


#: Headers the outbox adds to every message. They win over a row header of the same name.
OUTBOX_HEADER_NAMES = ("event_id", "event_type", "aggregate_type", "aggregate_id", "created_at")
#: Starts of quoted names that cover every outbox header name, for a quick clash test.
_OUTBOX_HEADER_NAME_STARTS = ('"event_', '"aggregate_', '"created_at"')


class OutboxMessage(NamedTuple):
    """One outbox row as it is published.

    A poller that reads a row's JSON columns as stored text sets
    ``payload_json`` and ``headers_json`` instead of ``payload`` and
    ``headers``. It is a named tuple because a drain builds one per row.
    """

    event_id: uuid.UUID
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: Any
    headers: dict[str, Any] | None
    created_at: datetime
    #: The payload as the JSON text stored in the row. A publisher that sends
    #: JSON text sends this unchanged instead of encoding ``payload``.
    payload_json: str | None = None
    #: The row's headers as the JSON text stored in the row.
    headers_json: str | None = None
    #: ``event_id`` as text, when the poller read it so.
    event_id_text: str | None = None

    def message_id(self) -> str:
        """Return the event id as text: the message id of the published message."""
        return self.event_id_text or str(self.event_id)

    def row_headers(self) -> dict[str, Any]:
        if self.headers is not None:
            return self.headers
        return dict(json.loads(self.headers_json or "{}"))

    def message_headers(self) -> dict[str, Any]:
        """Return the row's headers plus the outbox ones, which win on a name clash."""
        return {
            **self.row_headers(),
            "event_id": self.message_id(),
            "event_type": self.event_type,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "created_at": self.created_at.isoformat(),
        }

    def message_headers_json(self) -> str:
        """Return :meth:`message_headers` as JSON text.

        When the row's headers are stored JSON text that names none of the
        outbox headers, the outbox headers are appended to that text, which
        is several times faster than decoding and encoding it again. The
        result decodes to the same headers; only the spacing, the key order
        and the escaping of non-ASCII characters may differ.
        """
        stored = (self.headers_json or "").strip()
        event_, aggregate_, created_at = _OUTBOX_HEADER_NAME_STARTS
        if (
            not stored.startswith("{")
            or not stored.endswith("}")
            or event_ in stored
            or aggregate_ in stored
            or created_at in stored
        ):
            return json.dumps(self.message_headers())
        outbox_headers = (
            f'"event_id": "{self.message_id()}", "event_type": {json_string(self.event_type)},'
            f' "aggregate_type": {json_string(self.aggregate_type)},'
            f' "aggregate_id": {json_string(self.aggregate_id)},'
            f' "created_at": "{self.created_at.isoformat()}"'
        )
        row_members = stored[1:-1].strip()
        if not row_members:
            return "{" + outbox_headers + "}"
        return "{" + row_members + ", " + outbox_headers + "}"


class PublishResult(NamedTuple):
    """The fate of one message: accepted, failed with an error, or not sent."""

    event_id: uuid.UUID
    status: PublishStatus
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status is PublishStatus.ACCEPTED


class BrokerUnavailable(Exception):
    """The broker could not be connected to, or the stream's queues could not be declared."""


def _failed(message: OutboxMessage, error: str) -> PublishResult:
    return PublishResult(message.event_id, PublishStatus.FAILED, error)


def _not_sent(messages: Sequence[OutboxMessage]) -> list[PublishResult]:
    return [PublishResult(message.event_id, PublishStatus.NOT_SENT) for message in messages]


def broker_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    """Return the exceptions a failed connect, declare or publish on ``connection`` raises."""
    return (
        *connection.connection_errors,
        *connection.channel_errors,
        OSError,
        KombuError,
        MessageNacked,
    )


def _aggregate_of(message: OutboxMessage) -> tuple[str, str]:
    return (message.aggregate_type, message.aggregate_id)


def _unroutable_error(route: StreamRoute, routing_key: str) -> str:
    return (
        f"unroutable: no queue is bound to exchange {route.exchange} for routing key"
        f" {routing_key!r}; declare one in OUTBOX_DESTINATIONS"
    )


def publish_with_kombu(producer: Producer, message: OutboxMessage, **options: Any) -> None:
    """Send ``message`` with kombu's ``Producer.publish``, as the outbox sends every message.

    The body is the payload as JSON, the routing key the event type and the
    message id the event id. The message is persistent and carries
    :meth:`OutboxMessage.message_headers`. ``options`` adds further publish
    options, such as ``mandatory``. kombu does not retry.
    """
    producer.publish(
        message.payload,
        serializer="json",
        routing_key=message.event_type,
        delivery_mode=PERSISTENT_DELIVERY_MODE,
        message_id=message.message_id(),
        headers=message.message_headers(),
        retry=False,
        **options,
    )


class Publisher(ABC):
    """Publishes batches of one stream's messages over one broker connection.

    Each broker call waits at most ``timeout_seconds``. After a connection
    error ``broken`` is true, and the caller should stop and open a new one.
    """

    def __init__(self, connection: Connection, route: StreamRoute, timeout_seconds: float) -> None:
        self.connection = connection
        self.route = route
        self.timeout_seconds = timeout_seconds
        self.broken = False
        #: True when publish_batch reads ``payload_json`` and ``headers_json``, so the poller
        #: need not decode the row's JSON columns.
        self.reads_stored_json = False
        self.exchange = Exchange(route.exchange, type=EXCHANGE_TYPE, durable=True)
        #: Exceptions that mean the broker did not take a message (the transport's own ones).
        self.broker_errors = broker_errors(connection)

    def declare(self) -> None:
        """Declare the stream's exchange and its destination queues with their bindings.

        Raises BrokerUnavailable when the broker cannot be reached.
        """
        try:
            channel = self.connection.default_channel
            self.exchange.declare(channel=channel)
            for destination in self.route.queues:
                queue = Queue(
                    destination.name,
                    bindings=[
                        binding(self.exchange, routing_key=key) for key in destination.binding_keys
                    ],
                    durable=True,
                )
                queue.declare(channel=channel)
        except self.broker_errors as exc:
            raise BrokerUnavailable(
                f"declaring exchange {self.route.exchange} and its queues failed: "
                f"{describe_error(exc)}"
            ) from exc

    @abstractmethod
    def publish_batch(
        self, messages: Sequence[OutboxMessage], deadline: float | None = None
    ) -> list[PublishResult]:
        """Publish ``messages`` in order and return one result per message, in the same order.

        No message is started after ``deadline`` (a ``time.monotonic()`` value),
        and no message is sent after one of its aggregate failed in this call:
        both come back as NOT_SENT. A broker error (``broker_errors``) does not
        raise: it becomes the ``error`` of the failed messages.
        """

    def close(self) -> None:
        self.connection.release()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class VirtualPublisher(Publisher):
    """kombu virtual transport (the embedded filesystem broker): one ``Producer.publish`` each."""

    def _bound_queues(self, table: list[Any], routing_key: str) -> set[str]:
        channel = self.connection.default_channel
        exchange_type = channel.typeof(self.route.exchange)
        return set(exchange_type.lookup(table, self.route.exchange, routing_key, None))

    def publish_batch(
        self, messages: Sequence[OutboxMessage], deadline: float | None = None
    ) -> list[PublishResult]:
        channel = self.connection.default_channel
        producer = Producer(channel, exchange=self.exchange, auto_declare=False)
        results: list[PublishResult] = []
        failed_aggregates: set[tuple[str, str]] = set()

        for index, message in enumerate(messages):
            if index > 0 and deadline is not None and time.monotonic() >= deadline:
                return results + _not_sent(messages[index:])
            if _aggregate_of(message) in failed_aggregates:
                results.extend(_not_sent([message]))
                continue
            try:
                table = channel.get_table(self.route.exchange)
                if not self._bound_queues(table, message.event_type):
                    failed_aggregates.add(_aggregate_of(message))
                    results.append(
                        _failed(message, _unroutable_error(self.route, message.event_type))
                    )
                    continue
                publish_with_kombu(producer, message)
            except self.broker_errors as exc:
                failed_aggregates.add(_aggregate_of(message))
                results.append(_failed(message, describe_error(exc)))
                continue
            results.append(PublishResult(message.event_id, PublishStatus.ACCEPTED))
        return results


class RedisPublisher(VirtualPublisher):
    """Redis: one SMEMBERS for the bindings and one pipelined round trip for the whole batch.

    Each message is stored as kombu's Redis transport stores it (kombu 5.7,
    ``Channel._put``): the JSON-encoded message dict, body base64-encoded,
    pushed with LPUSH onto every queue whose binding in the set
    ``_kombu.binding.EXCHANGE`` matches the routing key. Priority 0 is the
    plain queue key, so no priority suffix is added.
    """

    def __init__(self, connection: Connection, route: StreamRoute, timeout_seconds: float) -> None:
        super().__init__(connection, route, timeout_seconds)
        self.reads_stored_json = True

    def publish_batch(
        self, messages: Sequence[OutboxMessage], deadline: float | None = None
    ) -> list[PublishResult]:
        channel: Any = self.connection.default_channel
        try:
            table = channel.get_table(self.route.exchange)
        except self.broker_errors as exc:
            self.broken = True
            error = describe_error(exc)
            return [_failed(message, error) for message in messages]

        results: dict[int, PublishResult] = {}
        # For each LPUSH in the pipeline, the index of its message.
        pushed: list[int] = []
        # The queues bound to each routing key, looked up once per batch.
        queues_by_key: dict[str, list[str]] = {}
        # Unique per batch; with the message's index it makes each delivery tag unique.
        batch_tag = uuid.uuid4().hex
        # NOTE: only unroutable messages are known to fail before the pipeline is
        # sent. A command that fails on the server (a queue key of the wrong type)
        # does not stop later messages of its aggregate, which were already pushed.
        failed_aggregates: set[tuple[str, str]] = set()
        exchange_json = json_string(self.route.exchange)
        with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipeline:
            for index, message in enumerate(messages):
                if failed_aggregates and _aggregate_of(message) in failed_aggregates:
                    results[index] = PublishResult(message.event_id, PublishStatus.NOT_SENT)
                    continue
                queues = queues_by_key.get(message.event_type)
                if queues is None:
                    queues = sorted(self._bound_queues(table, message.event_type))
                    queues_by_key[message.event_type] = queues
                if not queues:
                    failed_aggregates.add(_aggregate_of(message))
                    results[index] = _failed(
                        message, _unroutable_error(self.route, message.event_type)
                    )
                    continue
                stored = _stored_message_text(
                    message, exchange_json, delivery_tag_json=f'"{batch_tag}.{index}"'
                )
                for queue in queues:
                    pipeline.lpush(queue, stored)
                    pushed.append(index)

            try:
                replies = pipeline.execute(raise_on_error=False) if pushed else []
            except self.broker_errors as exc:
                # The pipeline may have run in part, so delivery is uncertain;
                # every pushed message is retried, which is at-least-once delivery.
                self.broken = True
                error = describe_error(exc)
                for index in pushed:
                    results[index] = _failed(messages[index], error)
                return [results[index] for index in range(len(messages))]

        for index, reply in zip(pushed, replies, strict=True):
            if isinstance(reply, Exception) or not isinstance(reply, int) or reply < 1:
                error = (
                    describe_error(reply)
                    if isinstance(reply, Exception)
                    else f"LPUSH returned {reply!r}"
                )
                results[index] = _failed(messages[index], error)
            elif index not in results:
                results[index] = PublishResult(messages[index].event_id, PublishStatus.ACCEPTED)

        return [results[index] for index in range(len(messages))]


#: ``json.dumps`` of kombu's stored message dict, with the variable parts as
#: JSON-encoded fields (``%(body)s`` is base64, which needs no escaping).
_REDIS_STORED_MESSAGE_FORM = (
    '{"body": "%(body)s", "content-encoding": "'
    + JSON_CONTENT_ENCODING
    + '", "content-type": "'
    + JSON_CONTENT_TYPE
    + '", "headers": %(headers)s, "properties": {"message_id": %(message_id)s,'
    + ' "delivery_mode": '
    + str(PERSISTENT_DELIVERY_MODE)
    + ', "delivery_info": {"exchange": %(exchange)s, "routing_key": %(routing_key)s},'
    ' "priority": 0, "body_encoding": "base64", "delivery_tag": %(delivery_tag)s}}'
)


def redis_stored_message(
    message: OutboxMessage, exchange: str, delivery_tag: str | None = None
) -> str:
    """Return ``message`` as kombu's Redis transport stores it in a queue list.

    The text is what ``json.dumps`` writes for the message dict that kombu 5.7
    stores (``Channel._put``), keys in kombu's order; the headers are as
    :meth:`OutboxMessage.message_headers_json` writes them. It is built from a
    fixed form, so the long base64 body is not scanned for characters to
    escape. ``delivery_tag`` must be unique among unacknowledged messages; a
    random UUID is used when none is given. The body is ``payload_json`` when set.
    """
    return _stored_message_text(
        message, json_string(exchange), json_string(delivery_tag or str(uuid.uuid4()))
    )


def _stored_message_text(message: OutboxMessage, exchange_json: str, delivery_tag_json: str) -> str:
    """Build :func:`redis_stored_message`'s text from the exchange and tag as JSON strings."""
    payload_json = message.payload_json
    if payload_json is None:
        payload_json = json.dumps(message.payload)
    body = base64.b64encode(payload_json.encode(JSON_CONTENT_ENCODING)).decode("ascii")
    return _REDIS_STORED_MESSAGE_FORM % {
        "body": body,
        "headers": message.message_headers_json(),
        "message_id": f'"{message.message_id()}"',
        "delivery_tag": delivery_tag_json,
        "exchange": exchange_json,
        "routing_key": json_string(message.event_type),
    }


class AmqpPublisher(Publisher):
    """RabbitMQ: mandatory publishes with publisher confirms, confirmed once per batch.

    The channel is put in confirm mode once. A batch publishes every message
    without waiting, then reads the broker's ``basic.ack`` and ``basic.nack``
    frames (each may confirm every earlier delivery tag at once) until all
    messages are confirmed or ``timeout_seconds`` pass. RabbitMQ sends
    ``basic.return`` for an unroutable mandatory message before its
    ``basic.ack``, so a message whose id was returned by the time its confirm
    arrived failed even though it was acked.
    """

    # NOTE: failures are known only after the whole batch was sent. Later messages
    # of an aggregate whose message was returned or nacked may already be delivered.
    # They count as published, and the failed one is retried after them.

    def __init__(self, connection: Connection, route: StreamRoute, timeout_seconds: float) -> None:
        super().__init__(connection, route, timeout_seconds)
        self._returned: dict[str, str] = {}
        self._confirm_channel: Any = None
        #: Delivery tag of the last message published on the confirm channel.
        self._last_delivery_tag = 0
        #: Delivery tag to True (acked) or False (nacked), for this batch's messages.
        self._confirms: dict[int, bool] = {}
        self._unconfirmed: set[int] = set()

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = str(message.properties.get("message_id", ""))
        self._returned[message_id] = f"returned by the broker: {describe_error(exc)}"

    def _on_confirm(self, delivery_tag: int, multiple: bool, acked: bool) -> None:
        tags = [tag for tag in self._unconfirmed if tag <= delivery_tag] if multiple else []
        if not multiple and delivery_tag in self._unconfirmed:
            tags = [delivery_tag]
        for tag in tags:
            self._confirms[tag] = acked
            self._unconfirmed.discard(tag)

    def _channel_in_confirm_mode(self) -> Any:
        if self._confirm_channel is None:
            # py-amqp's channel: confirm_select and its events are not in kombu's types.
            channel: Any = self.connection.default_channel
            channel.confirm_select()
            channel.events["basic_ack"].add(
                lambda tag, multiple: self._on_confirm(tag, multiple, True)
            )
            channel.events["basic_nack"].add(
                lambda tag, multiple: self._on_confirm(tag, multiple, False)
            )
            self._confirm_channel = channel
        return self._confirm_channel

    def publish_batch(
        self, messages: Sequence[OutboxMessage], deadline: float | None = None
    ) -> list[PublishResult]:
        try:
            channel = self._channel_in_confirm_mode()
        except self.broker_errors as exc:
            self.broken = True
            error = describe_error(exc)
            return [_failed(message, error) for message in messages]
        producer = Producer(
            channel, exchange=self.exchange, auto_declare=False, on_return=self._on_return
        )
        self._confirms.clear()
        self._unconfirmed.clear()
        # The delivery tag of each message that was sent, by its index.
        sent: dict[int, int] = {}

        for index, message in enumerate(messages):
            if index > 0 and deadline is not None and time.monotonic() >= deadline:
                break
            try:
                publish_with_kombu(producer, message, mandatory=True, timeout=self.timeout_seconds)
            except self.broker_errors as exc:
                # The channel may be closed and its delivery tags unknown: stop using it.
                self.broken = True
                return self._results(messages, sent, describe_error(exc))
            self._last_delivery_tag += 1
            sent[index] = self._last_delivery_tag
            self._unconfirmed.add(self._last_delivery_tag)

        return self._results(messages, sent, self._wait_for_confirms())

    def _wait_for_confirms(self) -> str | None:
        """Read confirms until none is outstanding; return an error when some never came."""
        confirm_deadline = time.monotonic() + self.timeout_seconds
        while self._unconfirmed:
            remaining = confirm_deadline - time.monotonic()
            if remaining <= 0:
                # A late confirm could be taken for a later batch's message.
                self.broken = True
                return f"not confirmed by the broker within {self.timeout_seconds:g}s"
            try:
                self.connection.drain_events(timeout=remaining)
            except self.broker_errors as exc:
                self.broken = True
                return describe_error(exc)
        return None

    def _results(
        self, messages: Sequence[OutboxMessage], sent: dict[int, int], error: str | None
    ) -> list[PublishResult]:
        results: list[PublishResult] = []
        for index, message in enumerate(messages):
            tag = sent.get(index)
            returned = self._returned.pop(str(message.event_id), None)
            if tag is None:
                results.append(PublishResult(message.event_id, PublishStatus.NOT_SENT))
            elif returned is not None:
                results.append(_failed(message, returned))
            elif tag in self._confirms:
                acked = self._confirms[tag]
                results.append(
                    PublishResult(message.event_id, PublishStatus.ACCEPTED)
                    if acked
                    else _failed(message, "nacked by the broker")
                )
            else:
                results.append(_failed(message, error or "not confirmed by the broker"))
        return results


def _broker_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def create_connection(settings: Settings) -> Connection:
    """Return a kombu connection whose connect, reads and writes time out after T seconds.

    T is BROKER_TIMEOUT_SECONDS.
    """
    timeout = settings.broker_timeout_seconds
    scheme = _broker_scheme(settings.broker_url)

    if scheme in ("redis", "rediss"):
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry_on_timeout": False,
        }
    elif scheme == "filesystem":
        options = embedded_broker.transport_options(settings)
    else:
        # AmqpPublisher enables confirms on its channel and waits for them per batch;
        # confirm_publish would make every publish wait for its own confirm.
        options = {"read_timeout": timeout, "write_timeout": timeout}

    return Connection(
        settings.broker_url,
        connect_timeout=timeout,
        heartbeat=0,
        transport_options=options,
    )


def open_publisher(settings: Settings, route: StreamRoute) -> Publisher:
    """Connect to the broker, declare ``route``'s queues, and return its publisher.

    Raises BrokerUnavailable within about the broker timeout when the broker
    cannot be reached.
    """
    scheme = _broker_scheme(settings.broker_url)
    publisher_class: type[Publisher]
    if scheme in ("redis", "rediss"):
        publisher_class = RedisPublisher
    elif scheme == "filesystem":
        publisher_class = VirtualPublisher
    else:
        publisher_class = AmqpPublisher

    connection = create_connection(settings)
    try:
        # No retry: a broker that refuses the first connection fails this run at once.
        connection.ensure_connection(max_retries=0)
    except broker_errors(connection) as exc:
        connection.release()
        raise BrokerUnavailable(f"connecting to the broker failed: {describe_error(exc)}") from exc

    publisher = publisher_class(connection, route, settings.broker_timeout_seconds)
    try:
        publisher.declare()
    except BrokerUnavailable:
        publisher.close()
        raise
    return publisher
