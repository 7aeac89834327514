"""``Bus(validator=...)``: an event published or emitted from code that breaks its topic's
registered schema raises before anything is appended, sent or dispatched, in every mode
(memory, SQLite, PostgreSQL, a transport), and is counted; a valid one is published as
usual and checked once, also through a ``ValidatingTransport`` sharing the validator."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import tidings
from tidings.contracts import SchemaRegistry, SchemaViolationError, Validator, validation
from tidings.contracts.metrics import ViolationsCollector
from tidings.contracts.transport import ValidatingTransport
from tidings.store import MemoryStore
from tidings.store.base import EventStore
from tidings.store.postgres import PostgresStore
from tidings.store.sqlite import SQLiteStore
from tidings.transports.base import Message
from tidings.transports.memory import MemoryBroker, MemoryTransport

TOPIC = "contracts.bus.stock"


@tidings.event(TOPIC)
@dataclasses.dataclass(frozen=True)
class Stocked:
    sku: str
    qty: int


SCHEMA = {
    "type": "object",
    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
    "required": ["sku", "qty"],
}


async def _registered(store: EventStore) -> Validator:
    registry = SchemaRegistry(store)
    await registry.register(f"{TOPIC}-value", SCHEMA)
    return Validator(registry)


async def _refuses_then_publishes(
    bus: tidings.Bus, validator: Validator, seen: list[Stocked], arrived: asyncio.Event
) -> None:
    with pytest.raises(SchemaViolationError) as caught:
        bus.publish(Stocked("s1", 0))
    assert (caught.value.field, caught.value.rule, caught.value.topic) == (
        "$.qty",
        "minimum",
        TOPIC,
    )
    with pytest.raises(SchemaViolationError):
        await bus.emit(Stocked("s1", -1))
    with pytest.raises(SchemaViolationError):
        bus.publish({"sku": 5, "qty": 1}, topic=TOPIC)
    assert validator.violations == {(TOPIC, "publish"): 3}
    bus.publish(Stocked("ok", 1))
    await bus.emit(Stocked("ok", 2))
    async with asyncio.timeout(10):
        while len(seen) < 2:
            arrived.clear()
            await arrived.wait()
    assert seen == [Stocked("ok", 1), Stocked("ok", 2)]  # the refused ones reached no handler
    assert validator.violations == {(TOPIC, "publish"): 3}


async def _stored(store: EventStore) -> list[Any]:
    return [r.envelope.payload for r in await store.read() if r.envelope.topic == TOPIC]


async def _in_store(store: EventStore) -> None:
    validator = await _registered(store)
    seen: list[Stocked] = []
    arrived = asyncio.Event()
    async with tidings.Bus(store=store, validator=validator) as bus:

        @bus.on(Stocked)
        def handler(event: Stocked) -> None:
            seen.append(event)
            arrived.set()

        await _refuses_then_publishes(bus, validator, seen, arrived)
        await bus.flush()
        assert await _stored(store) == [Stocked("ok", 1), Stocked("ok", 2)]  # nothing refused


async def test_memory_bus() -> None:
    async with MemoryStore() as schemas:
        validator = await _registered(schemas)
    seen: list[Stocked] = []
    arrived = asyncio.Event()
    async with tidings.Bus(validator=validator) as bus:

        @bus.on(Stocked)
        def handler(event: Stocked) -> None:
            seen.append(event)
            arrived.set()

        await _refuses_then_publishes(bus, validator, seen, arrived)


def _refuses_then_publishes_without_a_loop(
    validator: Validator, prepare: Callable[[tidings.Bus], object] = lambda bus: None
) -> None:
    """On a bus without a loop (``prepare``d first): a bad event refused, a good one handled."""
    seen: list[Stocked] = []
    with tidings.Bus(validator=validator) as bus:
        prepare(bus)
        bus.subscribe(Stocked, seen.append)
        with pytest.raises(SchemaViolationError):
            bus.publish(Stocked("s1", 0))
        bus.publish(Stocked("s1", 3))
    assert seen == [Stocked("s1", 3)]
    assert validator.violations == {(TOPIC, "publish"): 1}


def test_memory_bus_without_a_loop() -> None:
    """Also: the refusals are exported as ``tidings_schema_violations_total``."""
    validator = Validator(_Fixed())
    registry = CollectorRegistry()
    registry.register(ViolationsCollector(validator))
    _refuses_then_publishes_without_a_loop(validator)
    exported = generate_latest(registry).decode()
    assert f'tidings_schema_violations_total{{boundary="publish",topic="{TOPIC}"}} 1.0' in exported


def test_observed_bus() -> None:
    """An observed bus (its publish replaced by the observer's hook) checks too."""
    from tidings.observability import Metrics

    _refuses_then_publishes_without_a_loop(
        Validator(_Fixed()), lambda bus: Metrics(bus, registry=CollectorRegistry())
    )


async def test_sqlite_bus(tmp_path: Path) -> None:
    await _in_store(SQLiteStore(tmp_path / "log.db"))


@pytest.fixture
def postgres_store(postgres_url: str, postgres_schema: str) -> EventStore:
    return PostgresStore(postgres_url, schema=postgres_schema, pool_size=2)


async def test_postgres_bus(postgres_store: EventStore) -> None:
    await _in_store(postgres_store)


class _Received:
    def __init__(self) -> None:
        self.payloads: list[Any] = []
        self.arrived = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.payloads.append(message.envelope.payload)
        self.arrived.set()


@pytest.mark.parametrize("wrapped", [False, True], ids=["transport", "validating-transport"])
async def test_transport_bus(wrapped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing refused reaches the broker; with a ``ValidatingTransport`` sharing the
    validator, each event is checked once (not once by the bus and again by the transport)."""
    encoded: list[object] = []

    def counted(payload: object) -> bytes:  # what the validator encodes: one per check
        encoded.append(payload)
        return msgspec.json.encode(payload)

    monkeypatch.setattr(validation, "_encode", counted)
    async with MemoryStore() as schemas:
        validator = await _registered(schemas)
    broker = MemoryBroker()
    listener = MemoryTransport(broker)
    await listener.start()
    received = _Received()
    await listener.subscribe(TOPIC, received, name="listener")
    transport = MemoryTransport(broker)
    carried = ValidatingTransport(transport, validator) if wrapped else transport
    async with tidings.Bus(transport=carried, validator=validator) as bus:
        with pytest.raises(SchemaViolationError):
            bus.publish(Stocked("s1", 0))
        with pytest.raises(SchemaViolationError):
            await bus.emit(Stocked("s1", 0))
        await bus.emit(Stocked("ok", 1))
        async with asyncio.timeout(10):
            while not received.payloads:
                received.arrived.clear()
                await received.arrived.wait()
    await listener.aclose()
    assert [p["sku"] if isinstance(p, dict) else p.sku for p in received.payloads] == ["ok"]
    assert validator.violations == {(TOPIC, "publish"): 2}
    assert encoded == [Stocked("s1", 0), Stocked("s1", 0), Stocked("ok", 1)]  # each once


class _Fixed:
    def cached(self, subject: str, version: int | None = None) -> Any:
        from tidings.contracts import RegisteredSchema

        return RegisteredSchema(f"{TOPIC}-value", 1, 1, "JSON", "{}", SCHEMA)
