"""The Kafka transport's publish path as the bus uses it: ``check_envelope`` encodes a
record that ``send`` then takes, against a real broker (Tansu)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

from tidings.clock import HybridClock
from tidings.testing.transport_conformance import TIMEOUT, ConformanceOrder, make_envelope
from tidings.transports.kafka import KafkaTransport


async def _values(broker: Any, topic: str, count: int) -> list[bytes]:
    """The values of the first ``count`` records of ``topic`` (waits at most TIMEOUT)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(values) < count and time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(record.value for record in part)
    finally:
        await consumer.stop()
    return values


async def test_a_checked_record_goes_only_with_its_own_envelope_not_one_of_the_same_id(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    # Regression: the record check_envelope encoded was kept under the event's id text,
    # so another envelope with the same id (a copy with other data) was sent with it.
    clock = HybridClock()
    checked = make_envelope(clock, "checked", key="k")
    other = msgspec.structs.replace(checked, payload=ConformanceOrder("other", 5.0))
    assert other.id == checked.id
    async with kafka_factory(partitions=1) as transport:
        transport.check_envelope(checked)
        await (await transport.send(other))
        await (await transport.send(checked))
        values = await _values(kafka_broker, transport.destination(checked.topic), 2)
    assert [msgspec.json.decode(value)["order_id"] for value in values] == ["other", "checked"]
