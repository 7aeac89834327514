"""The schema version on the wire (``dataschema``), and readers on another version: events
upcast by the registered upcasters, or refused with a clear error, never half-decoded."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

import tidings
from tidings import dataschema
from tidings.cloudevents import from_cloudevent, to_binary, to_cloudevent
from tidings.event import Envelope
from tidings.exceptions import DecodeError
from tidings.testing.transport_conformance import Collector, DeadLetters
from tidings.transports.memory import MemoryBroker, MemoryTransport


@tidings.event("dataschema.order", version=3)
@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    currency: str
    total_cents: int


def _upcast_v1(old: dict[str, Any]) -> dict[str, Any]:
    return {**old, "currency": "EUR"}


def _upcast_v2(old: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in old.items() if k != "total"}
    return {**out, "total_cents": round(old["total"] * 100)}


dataschema.upcasters.register(Order, 1, _upcast_v1)
dataschema.upcasters.register(Order, 2, _upcast_v2)


def _event(version: int, data: dict[str, Any], topic: str = "dataschema.order") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"e{version}",
        "source": "old-service",
        "type": topic,
        "dataschema": dataschema.schema_uri(topic, version),
        "data": data,
    }


def test_a_declared_class_carries_its_version_and_round_trips() -> None:
    env = Envelope("dataschema.order", Order("o1", "EUR", 100), 1)
    event = to_cloudevent(env)
    assert event["dataschema"] == "tidings:schemas/dataschema.order/versions/3"
    headers, _ = to_binary(env)
    assert headers["ce-dataschema"] == event["dataschema"]
    back = from_cloudevent(event)
    assert back.payload == env.payload
    assert not back.attributes  # implied by the class: not kept twice
    assert "dataschema" not in to_cloudevent(Envelope("x.y", {"plain": 1}, 1))


def test_older_events_are_upcast_step_by_step() -> None:
    v1 = from_cloudevent(_event(1, {"id": "o1", "total": 1.5}))
    assert v1.payload == Order("o1", "EUR", 150)
    v2 = from_cloudevent(_event(2, {"id": "o2", "currency": "USD", "total": 2.0}))
    assert v2.payload == Order("o2", "USD", 200)
    assert to_cloudevent(v2)["dataschema"].endswith("/versions/3")  # now at the class's


def test_a_newer_version_or_a_missing_step_is_a_clear_error() -> None:
    with pytest.raises(DecodeError, match="version 4, newer than the version 3"):
        from_cloudevent(_event(4, {"id": "o1", "currency": "EUR", "total_cents": 1}))
    with pytest.raises(DecodeError, match="no upcaster brings"):
        dataschema.upcasters.upcast("dataschema.order", {}, 0, 3)
    with pytest.raises(DecodeError, match=r"upcasting .* from version 2 to 3 failed"):
        from_cloudevent(_event(2, {"id": "o1", "currency": "EUR", "total": "x"}))
    with pytest.raises(DecodeError, match="cannot convert"):  # upcast, then still wrong
        from_cloudevent(_event(2, {"id": 5, "currency": "EUR", "total": 1}))


async def test_a_transport_upcasts_old_events_and_dead_letters_newer_ones_at_once() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker) as transport:
        got = Collector()
        dead = DeadLetters()
        await transport.subscribe("dataschema.>", got)
        await transport.subscribe_dead_letters(dead)
        for version, data in (
            (1, {"id": "o1", "total": 1.0}),
            (4, {"id": "o2", "currency": "EUR", "total_cents": 5}),
        ):
            event = _event(version, data)
            headers = {f"ce-{k}": str(v) for k, v in event.items() if k != "data"}
            headers["content-type"] = "application/json"
            await transport.publish_raw("dataschema.order", json.dumps(data).encode(), headers)
        await got.wait_count(1)
        await dead.wait_count(1)
        assert [m.envelope.payload for m in got.messages] == [Order("o1", "EUR", 100)]
        [record] = dead.records
        assert record.handler == "tidings.decode"
        assert record.attempts == 1
        assert "newer than the version 3" in record.reason
