"""Two gateway processes sharing a nats-server: events posted to both are routed exactly once
in total (each replica routes what it accepted, from its own log; `nats` targets publish on
the shared JetStream stream, where an observer counts them)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx

import tidings
from tidings.testing.nats_server import NatsServer
from tidings.transports.nats import NatsTransport

from .replicas import post_load_event, replica_folders
from .test_serve import gateway_process

EVENTS = 200


async def test_two_gateways_on_one_nats_server_route_each_event_once(tmp_path: Path) -> None:
    with NatsServer(name="tidings-gateway-replicas") as server:
        routed: list[Any] = []
        arrived = asyncio.Event()
        observer = tidings.Bus(transport=NatsTransport(server.url, connect_timeout=10))

        @observer.on("routed.>", group="observer")
        async def seen(envelope: tidings.Envelope[Any]) -> None:
            routed.append(envelope.payload["n"])
            arrived.set()

        await observer.start()
        config = (
            f"store: sqlite:///events.db\ntransport: {server.url}\n"
            "routes: [{name: r, from: load.>, to: [{nats: routed.load}]}]\n"
        )
        folders = replica_folders(tmp_path, config)
        try:
            async with (
                gateway_process(folders[0], "g.yaml") as first,
                gateway_process(folders[1], "g.yaml") as second,
                httpx.AsyncClient(timeout=10) as client,
            ):
                for n in range(EVENTS):
                    await post_load_event(client, (first, second)[n % 2].url, n)
                assert await first.stop(signal.SIGINT) == 0  # drained: all published
                assert await second.stop(signal.SIGINT) == 0
            async with asyncio.timeout(30):
                while len(routed) < EVENTS:
                    arrived.clear()
                    await arrived.wait()
            await asyncio.sleep(0.5)  # a duplicate would arrive in this grace period
        finally:
            await observer.aclose()
    assert sorted(routed) == list(range(EVENTS))  # each once, none lost, none doubled
