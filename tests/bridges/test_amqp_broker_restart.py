"""The AMQP bridge while its broker is stopped and started again: a RabbitMQ node of the
test's own (tidings.testing.brokers.RabbitNode), not the shared one. 400 persistent
CloudEvents, published with confirms, 150 before the stop and 250 after the restart: every
one ends up in the bus's log, once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aio_pika
import pytest
from cloudevents.core.bindings import amqp as sdk_amqp
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import tidings
from tidings.bridges.amqp import AmqpBridge
from tidings.testing.brokers import RabbitNode, wait_until

from .stored import until_stored

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOTAL = 400
EXCHANGE = "restart"


def persistent(n: int) -> aio_pika.Message:
    """Event ``e-NNNN`` in the SDK's AMQP binary mode, as a persistent message."""
    event = CloudEvent(
        attributes={
            "id": f"e-{n:04d}",
            "source": "urn:test:restart",
            "type": "gone.x",
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
        data={"n": n},
    )
    message = sdk_amqp.to_binary(event, JSONFormat())
    return aio_pika.Message(
        message.application_data,
        headers=dict(message.application_properties),
        content_type=message.properties.get("content-type"),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def publish(url: str, numbers: Sequence[int]) -> None:
    """Publish with publisher confirms: each returns once the broker has it."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for n in numbers:
            await exchange.publish(persistent(n), routing_key="gone.x")
    finally:
        await connection.close()


async def test_a_broker_stopped_and_restarted_loses_no_accepted_message(
    rabbit_node: RabbitNode, tmp_path: Path
) -> None:
    async with (
        tidings.Bus(store=f"sqlite:///{tmp_path}/log.db") as bus,
        AmqpBridge(
            bus,
            f"{rabbit_node.url}?reconnect_interval=0.5",
            exchange=EXCHANGE,
            queues=["restart.q"],
            bind=["gone.>"],
            dead_letter_exchange="restart.dead",
            prefetch=32,
            backoff_limit=0.5,
        ) as amqp,
    ):
        await publish(rabbit_node.url, range(150))
        await wait_until(lambda: amqp.counts.accepted >= 60, timeout=30)
        await asyncio.to_thread(rabbit_node.stop)  # whatever was not yet consumed is on disk
        await wait_until(lambda: not amqp.connected, timeout=10)
        await asyncio.to_thread(rabbit_node.start)
        await publish(rabbit_node.url, range(150, TOTAL))
        store = bus.store
        assert store is not None
        await until_stored(store, "gone.x", TOTAL, 90)
        # a batch is counted accepted once its append returns, just after the log shows it
        await wait_until(lambda: amqp.counts.accepted >= TOTAL, timeout=10)
        records = await store.read(topic="gone.x")
        counts = amqp.counts
    assert sorted(r.envelope.id for r in records) == [f"e-{n:04d}" for n in range(TOTAL)]
    assert sorted(r.envelope.payload["n"] for r in records) == list(range(TOTAL))
    assert counts.dead_lettered == 0
    assert counts.reconnects >= 1
    assert counts.accepted >= TOTAL  # redeliveries of what was unacknowledged at the stop
    assert counts.acknowledged <= counts.accepted
