"""The bound on what a transport's ``check_envelope`` keeps for a publish that never comes
(the bus's store append failed after the check): one check of it, shared by the Kafka and
NATS tests (both keep their encodings in ``tidings.transports._checked``)."""

from __future__ import annotations

import weakref
from typing import Any

from tidings.clock import HybridClock
from tidings.testing.transport_conformance import TIMEOUT, make_envelope
from tidings.transports import Transport

__all__ = ("assert_unpublished_checks_are_dropped", "checked_orphan")


def checked_orphan(transport: Transport, clock: HybridClock, text: str) -> weakref.ref[Any]:
    """Check an envelope that is never published; a weak reference to its payload, alive as
    long as the transport keeps the envelope."""
    orphan = make_envelope(clock, text)
    transport.check_envelope(orphan)
    return weakref.ref(orphan.payload)


async def assert_unpublished_checks_are_dropped(transport: Transport, window: int) -> None:
    """On a started ``transport`` publishing with ``window``: a checked envelope no publish
    takes is dropped within two windows of envelopes checked and published after it, and,
    with nothing published, within 16 windows (and the one until the drop runs) of checks."""
    clock = HybridClock()
    orphan = checked_orphan(transport, clock, "checked, its append failed")
    assert orphan() is not None  # kept for its publish
    for i in range(2 * window):
        env = make_envelope(clock, f"e-{i}")
        transport.check_envelope(env)
        await (await transport.send(env))
    assert orphan() is None
    first = checked_orphan(transport, clock, "first")
    for i in range(17 * window):
        transport.check_envelope(make_envelope(clock, f"never-{i}"))
    assert first() is None
    assert await transport.flush(TIMEOUT) == 0
