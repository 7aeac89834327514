"""Failures of the server side: a restart mid-stream, and a cluster losing its stream leader."""

from __future__ import annotations

import asyncio

import pytest

from tidings.clock import HybridClock
from tidings.testing.nats_server import NatsCluster, NatsServer
from tidings.testing.transport_conformance import Collector, make_envelope
from tidings.transports import DeliveryPolicy, PublishAck
from tidings.transports.nats import NatsTransport

from .outage_transports import outage_transport

pytestmark = pytest.mark.slow


async def _publish_all(
    transport: NatsTransport, count: int, halfway: asyncio.Event
) -> tuple[set[str], int]:
    """Send ``count`` events; return the ids the server acknowledged and the failures."""
    clock = HybridClock()
    pending: list[tuple[str, asyncio.Future[PublishAck]]] = []
    for n in range(count):
        env = make_envelope(clock, f"e-{n}", key=f"k{n % 8}")
        pending.append((env.id, await transport.send(env)))
        if n == count // 3:
            halfway.set()
        if n % 50 == 0:
            await asyncio.sleep(0)  # let acks and consumers run while publishing
    failed = await transport.flush(90)
    acked = {event_id for event_id, future in pending if not future.exception()}
    return acked, failed


async def test_server_restart_mid_stream_loses_nothing_acknowledged(
    own_server: NatsServer,
) -> None:
    publisher = outage_transport(own_server.url, "RESTART")
    consumer = outage_transport(own_server.url, "RESTART")
    async with publisher, consumer:
        grouped, everyone = Collector(), Collector()
        policy = DeliveryPolicy(ack_wait=5.0, workers=2)
        await consumer.subscribe("conformance.>", grouped, group="survivors", policy=policy)
        await consumer.subscribe("conformance.>", everyone, policy=policy)
        halfway = asyncio.Event()
        publishing = asyncio.create_task(_publish_all(publisher, 6_000, halfway))
        await asyncio.wait_for(halfway.wait(), 60)
        await grouped.wait_count(100)
        own_server.kill()
        await asyncio.to_thread(own_server.restart)
        acked, failed = await asyncio.wait_for(publishing, 120)
        assert failed == 0
        assert len(acked) == 6_000
        await grouped.wait_for(lambda: set(grouped.ids) >= acked, timeout=90)
        await everyone.wait_for(lambda: set(everyone.ids) >= acked, timeout=90)
        assert publisher.connected
        assert consumer.connected


async def test_cluster_survives_losing_the_stream_leader(cluster: NatsCluster) -> None:
    publisher = outage_transport(cluster.urls, "HA", replicas=3)
    consumer = outage_transport(cluster.urls, "HA", replicas=3)
    async with publisher, consumer:
        got = Collector()
        await consumer.subscribe(
            "conformance.>", got, group="ha", policy=DeliveryPolicy(ack_wait=5.0)
        )
        halfway = asyncio.Event()
        publishing = asyncio.create_task(_publish_all(publisher, 3_000, halfway))
        await asyncio.wait_for(halfway.wait(), 60)
        info = await publisher._js.stream_info("HA")
        leader = cluster.server_named(info.cluster.leader)
        leader.kill()
        acked, failed = await asyncio.wait_for(publishing, 150)
        assert len(acked) + failed == 3_000
        assert len(acked) >= 2_900  # the leader's death costs at most a few publishes
        await got.wait_for(lambda: set(got.ids) >= acked, timeout=120)
        info = await publisher._js.stream_info("HA")
        assert info.cluster.leader != leader.name
