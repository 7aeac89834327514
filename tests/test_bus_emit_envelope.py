"""``Bus.emit_envelope``: an envelope made elsewhere (a bridge's decoded CloudEvent) goes
onto the bus as it is."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import tidings
from tidings.event import Envelope
from tidings.exceptions import BusClosedError, ClockSkewError


def foreign(time: int = 1_700_000_000_000_000_000) -> Envelope[Any]:
    return Envelope(
        "devices.reading",
        {"celsius": 21.5},
        time,
        "thermo-7",
        "urn:device:7",
        MappingProxyType({"site": "berlin"}),
        "ce-42",
        "",
        MappingProxyType({"type": "com.example.reading", "subject": "room 7"}),
    )


async def test_the_envelope_is_delivered_and_stored_as_it_is(tmp_path: Path) -> None:
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        seen: list[Envelope[Any]] = []
        bus.subscribe("devices.>", seen.append, envelope=True)
        env = foreign()
        delivery = await bus.emit_envelope(env)
        await bus.emit_envelope(env)  # a redelivered copy: the log keeps the id once
        store = bus.store
        assert store is not None
        records = await store.read(topic="devices.>")
        assert bus.publish({"n": 1}, topic="local.x").time > env.time  # the clock merged it
    assert delivery.envelope is env
    assert [e.id for e in seen] == ["ce-42", "ce-42"]
    assert len(records) == 1
    stored = records[0].envelope
    assert (stored.id, stored.source, stored.key, stored.time) == (
        "ce-42",
        "urn:device:7",
        "thermo-7",
        env.time,
    )
    assert stored.headers == {"site": "berlin"}
    assert stored.attributes == {"type": "com.example.reading", "subject": "room 7"}


async def test_a_time_far_ahead_and_a_closed_bus_are_refused() -> None:
    bus = tidings.Bus()
    ahead = foreign(time=2**62)
    with pytest.raises(ClockSkewError):
        await bus.emit_envelope(ahead)
    await bus.aclose()
    with pytest.raises(BusClosedError):
        await bus.emit_envelope(foreign())
