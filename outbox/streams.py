"""Routing of each outbox stream: its exchange and the destination queues bound to it.

Every stream publishes to its own topic exchange ``outbox.STREAM`` with the
event type as routing key. The destination queues and their binding keys come
from the OUTBOX_DESTINATIONS setting and are declared before anything is
published, so a message is never sent to an exchange with no queue behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import OUTBOX_DESTINATIONS_FORM, ConfigurationError, Settings
from outbox.models import OUTBOX_MODELS

#: Exchange type of every stream: binding keys may use ``*`` (one word) and ``#`` (any words).
EXCHANGE_TYPE = "topic"
#: Binding key of a stream's default queue: every event type.
MATCH_ALL_BINDING_KEY = "#"


@dataclass(frozen=True)
class DestinationQueue:
    """A durable queue bound to a stream's exchange with one or more binding keys."""

    name: str
    binding_keys: tuple[str, ...]


@dataclass(frozen=True)
class StreamRoute:
    """The route of one stream's events: its exchange and the queues bound to it."""

    stream: str
    exchange: str
    queues: tuple[DestinationQueue, ...]

    @property
    def loop(self) -> str:
        return f"outbox.{self.stream}"


def exchange_name(stream: str) -> str:
    return f"outbox.{stream}"


def default_queue(stream: str) -> DestinationQueue:
    return DestinationQueue(name=f"outbox.{stream}.events", binding_keys=(MATCH_ALL_BINDING_KEY,))


def parse_destinations(text: str) -> dict[str, tuple[DestinationQueue, ...]]:
    """Parse OUTBOX_DESTINATIONS into queues by stream; raises ConfigurationError.

    A stream may be listed several times, once per queue.
    """
    queues: dict[str, list[DestinationQueue]] = {}
    for raw_entry in text.split(";"):
        entry = raw_entry.strip()
        if not entry:
            continue

        stream, _, rest = entry.partition(":")
        queue_name, _, keys_text = rest.partition("=")
        binding_keys = tuple(key.strip() for key in keys_text.split(",") if key.strip())
        if stream not in OUTBOX_MODELS or not queue_name or not binding_keys:
            raise ConfigurationError("OUTBOX_DESTINATIONS", text, OUTBOX_DESTINATIONS_FORM)

        queue = DestinationQueue(name=queue_name.strip(), binding_keys=binding_keys)
        queues.setdefault(stream, []).append(queue)
    return {stream: tuple(listed) for stream, listed in queues.items()}


def build_stream_routes(settings: Settings) -> dict[str, StreamRoute]:
    """Return the route of every stream, configured or default."""
    configured = parse_destinations(settings.outbox_destinations)
    routes: dict[str, StreamRoute] = {}
    for stream in OUTBOX_MODELS:
        queues = configured.get(stream) or (default_queue(stream),)
        routes[stream] = StreamRoute(stream=stream, exchange=exchange_name(stream), queues=queues)
    return routes


def stream_route(stream: str, settings: Settings) -> StreamRoute:
    """Return ``stream``'s route; raises KeyError for an unknown stream."""
    return build_stream_routes(settings)[stream]
