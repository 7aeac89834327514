"""``NatsTransport.health()`` and ``bus.statistics().transport``: the connection's state as
the client knows it, against a real nats-server (the restart is in
tests/server/test_console_transport.py)."""

from __future__ import annotations

from collections.abc import Callable

import tidings
from tidings.transports import MemoryTransport, TransportHealth
from tidings.transports.nats import NatsTransport

Factory = Callable[..., NatsTransport]


async def test_health_is_disconnected_before_start_connected_while_open_and_closed_after(
    nats_factory: Factory,
) -> None:
    transport = nats_factory()
    assert transport.health().state == "disconnected"
    async with tidings.Bus(transport=transport) as bus:
        health = bus.statistics().transport
        assert health is not None
        assert health.state == "connected"
        assert health.server == transport.servers[0]
        assert (health.pending, health.disconnects, health.last_error) == (0, 0, None)
    assert transport.health().state == "disconnected"


async def test_a_bus_without_transport_has_no_health_and_others_say_unknown() -> None:
    assert tidings.Bus().statistics().transport is None
    assert MemoryTransport().health() == TransportHealth(state="unknown")
