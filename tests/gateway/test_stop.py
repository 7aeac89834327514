"""Gateway.stop: what a timed-out drain cancels is not checkpointed, so it is routed again at
the next start (nothing accepted is lost)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import tidings
from tidings.event import Envelope
from tidings.gateway import Gateway, parse_config


async def test_a_delivery_cancelled_by_the_stop_timeout_is_routed_again_after_a_restart(
    tmp_path: Path,
) -> None:
    answered, done = asyncio.Event(), asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered.set()  # a request arrived; it gets no answer until the test ends
        await reader.read(1 << 16)
        await done.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = (
        "routes: [{name: hook, from: orders.>, "
        f"to: [{{webhook: 'http://127.0.0.1:{port}/', timeout: 20s}}]}}]\n"
    )
    try:
        async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
            gateway = Gateway(bus, parse_config([("g.yaml", config)]))
            await gateway.start()
            event = Envelope("orders.placed", {"n": 1}, 1_000, source="t", _id="e1")
            [position] = await gateway.accept([event])
            await asyncio.wait_for(answered.wait(), 10)  # the delivery is in flight
            assert not await gateway.stop(timeout=0.1)  # not drained: cancelled
            assert await gateway.store.load_checkpoint(gateway.consumer) < position
        routed: list[Any] = []
        async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
            again = Gateway(
                bus,
                parse_config([("g.yaml", "routes: [{name: r, from: orders.>, to: [{topic: x}]}]")]),
                on_routed=lambda record, table, dispatches: routed.append(record.envelope.id),
            )
            await again.start()
            assert await again.wait_routed(position, 10)
            assert "e1" in routed
            await again.stop(5)
    finally:
        done.set()
        server.close()
        await server.wait_closed()
