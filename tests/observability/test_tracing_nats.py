"""One trace across three OS processes connected by NATS: publish, handle, publish, handle."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.observability import Tracing
from tidings.testing.nats_server import NatsServer
from tidings.transports.nats import NatsTransport, StreamSettings

from .conftest import Spans
from .trace_worker import Placed

WORKER = Path(__file__).with_name("trace_worker.py")
TIMEOUT = 30.0
PREFIX, STREAM = "otel", "OTEL"


class Worker:
    """A worker process and the spans it reported."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.spans: list[dict[str, Any]] = []

    async def line(self) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        assert raw, "the worker exited"
        return raw.decode().strip()

    async def span(self, name: str) -> dict[str, Any]:
        """Read the worker's output until it reports a span named ``name``."""
        while True:
            for span in self.spans:
                if span["name"] == name:
                    return span
            text = await self.line()
            if text.startswith("span "):
                self.spans.append(json.loads(text[5:]))


@pytest.fixture
async def workers(nats_server: NatsServer) -> AsyncIterator[dict[str, Worker]]:
    started: dict[str, Worker] = {}
    try:
        for role in ("ship", "notify"):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                role,
                nats_server.url,
                PREFIX,
                STREAM,
                stdout=asyncio.subprocess.PIPE,
            )
            started[role] = worker = Worker(process)
            assert await worker.line() == "ready"
        yield started
    finally:
        for worker in started.values():
            if worker.process.returncode is None:
                worker.process.terminate()
            try:
                await asyncio.wait_for(worker.process.wait(), TIMEOUT)
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()


async def test_one_trace_spans_three_processes(
    nats_server: NatsServer, workers: dict[str, Worker], spans: Spans
) -> None:
    transport = NatsTransport(nats_server.url, prefix=PREFIX, stream=StreamSettings(name=STREAM))
    async with tidings.Bus(transport=transport) as bus:
        Tracing(bus, tracer_provider=spans.provider)
        delivery = await bus.emit(Placed(1))
    [send] = spans.named("send obs.placed")
    trace_id = f"{send.context.trace_id:032x}"
    shipped = await workers["ship"].span("process obs.placed")
    forwarded = await workers["ship"].span("send obs.shipped")
    notified = await workers["notify"].span("process obs.shipped")

    assert send.kind.name == "PRODUCER"
    assert (send.attributes or {})["messaging.system"] == "nats"
    for span in (shipped, forwarded, notified):
        assert span["trace_id"] == trace_id
    assert shipped["parent_id"] == f"{send.context.span_id:016x}"
    assert forwarded["parent_id"] == shipped["span_id"]
    assert notified["parent_id"] == forwarded["span_id"]
    assert shipped["kind"] == notified["kind"] == "CONSUMER"
    assert forwarded["kind"] == "PRODUCER"
    assert shipped["attributes"] == {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.template": "obs.placed",
        "messaging.destination.subscription.name": shipped["attributes"][
            "messaging.destination.subscription.name"
        ],
        "messaging.destination.name": "obs.placed",
        "messaging.message.id": delivery.envelope.id,
        "tidings.delivery_attempt": 1,
        "messaging.consumer.group.name": "shipping",
    }
    assert notified["attributes"]["messaging.consumer.group.name"] == "notify"
