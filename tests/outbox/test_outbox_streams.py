"""Stream routes from OUTBOX_DESTINATIONS."""

from __future__ import annotations

import pytest

from app.settings import ConfigurationError, load_settings
from outbox.streams import DestinationQueue, build_stream_routes, parse_destinations


def test_routes_default_to_match_all_queue() -> None:
    routes = build_stream_routes(load_settings({}))

    assert routes["rolling"].exchange == "outbox.rolling"
    assert routes["rolling"].queues == (DestinationQueue("outbox.rolling.events", ("#",)),)


def test_routes_from_destinations_setting() -> None:
    text = "wallet:ledger=wallet.credited,wallet.debited; wallet:audit=#;agent:agents=agent.*"
    routes = build_stream_routes(load_settings({"OUTBOX_DESTINATIONS": text}))

    assert routes["wallet"].queues == (
        DestinationQueue("ledger", ("wallet.credited", "wallet.debited")),
        DestinationQueue("audit", ("#",)),
    )
    assert routes["agent"].queues == (DestinationQueue("agents", ("agent.*",)),)
    assert routes["rolling"].queues == (DestinationQueue("outbox.rolling.events", ("#",)),)


@pytest.mark.parametrize("text", ["ledger=#", "bank:q=#", "wallet:q=", "wallet:=#"])
def test_destinations_invalid_names_variable(text: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings({"OUTBOX_DESTINATIONS": text})

    assert raised.value.variable == "OUTBOX_DESTINATIONS"
    with pytest.raises(ConfigurationError):
        parse_destinations(text)
