"""Validation at a transport's edges: publishing an invalid event from code raises before
anything is sent; an invalid event arriving is dead-lettered at once with the violation.
On the in-memory transport and on a real nats-server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

import tidings
from tidings.contracts import RegisteredSchema, SchemaViolationError, Validator
from tidings.contracts.transport import ValidatingTransport
from tidings.testing.transport_conformance import DeadLetters
from tidings.transports.base import DeliveryPolicy, Message, Transport
from tidings.transports.memory import MemoryBroker, MemoryTransport

SCHEMA = {
    "type": "object",
    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
    "required": ["sku", "qty"],
}


@tidings.event("contracts.stock.moved")
@dataclasses.dataclass(frozen=True)
class StockMoved:
    sku: str
    qty: int


class _Source:
    entry = RegisteredSchema("contracts.stock.moved-value", 1, 1, "JSON", "{}", SCHEMA)

    def cached(self, subject: str, version: int | None = None) -> RegisteredSchema | None:
        return self.entry if subject == self.entry.subject and version in (None, 1) else None


async def _scenario(make: Callable[[], Transport]) -> None:
    validator = Validator(_Source())
    checked = ValidatingTransport(make(), validator)
    async with tidings.Bus(transport=checked) as bus:
        with pytest.raises(SchemaViolationError) as caught:
            bus.publish(StockMoved("s1", 0))
        assert (caught.value.field, caught.value.rule) == ("$.qty", "minimum")
        with pytest.raises(SchemaViolationError):
            await bus.emit(StockMoved("s1", -3))
        await bus.emit(StockMoved("s1", 2))
    assert validator.violations == {("contracts.stock.moved", "publish"): 2}

    # receiving: the other process publishes without validation
    received: list[Message] = []
    arrived = asyncio.Event()

    async def handler(message: Message) -> None:
        received.append(message)
        arrived.set()

    dead = DeadLetters()
    receiver = ValidatingTransport(make(), validator)
    await receiver.start()
    policy = DeliveryPolicy(max_deliver=5, ack_wait=5.0, backoff=0.05)
    await receiver.subscribe("contracts.stock.>", handler, policy=policy, name="stock.handler")
    await receiver.subscribe_dead_letters(dead, start="new")
    sender = ValidatingTransport(make(), Validator(_NoSchemas()))
    await sender.start()
    clock = tidings.HybridClock()
    await sender.publish(
        tidings.Envelope("contracts.stock.moved", StockMoved("bad", 0), clock.now())
    )
    await sender.publish(
        tidings.Envelope("contracts.stock.moved", StockMoved("ok", 1), clock.now())
    )
    await dead.wait_count(1)
    async with asyncio.timeout(10):
        while not any(m.envelope.payload.sku == "ok" for m in received):
            arrived.clear()
            await arrived.wait()
    [record] = dead.records
    assert record.attempts == 1  # a violation is permanent: no retries
    assert record.reason.startswith("SchemaViolationError: ")
    assert "'minimum' at $.qty" in record.reason
    assert record.envelope is not None
    assert record.envelope.payload == StockMoved("bad", 0)
    assert [m.envelope.payload.sku for m in received] == ["ok"]
    assert validator.violations[("contracts.stock.moved", "transport")] == 1
    await sender.aclose()
    await receiver.aclose()


class _NoSchemas:
    def cached(self, subject: str, version: int | None = None) -> None:
        return None


async def test_memory_transport() -> None:
    broker = MemoryBroker()
    await _scenario(lambda: MemoryTransport(broker))


async def test_nats_transport(nats_factory: Callable[..., Any]) -> None:
    await _scenario(nats_factory)
