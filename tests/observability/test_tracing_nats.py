"""Tracing over NATS: one trace across three OS processes (publish, handle, publish, handle);
the process span's link to the creation context and its broker attributes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.semconv._incubating.attributes import server_attributes as server

import tidings
from tidings.observability import Tracing
from tidings.testing.nats_server import NatsServer
from tidings.transports.nats import NatsTransport, StreamSettings
from tidings.transports.wire import encode_envelope

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
    attributes = shipped["attributes"]
    assert attributes == {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.template": "otel.obs.placed",
        "messaging.destination.subscription.name": attributes[
            "messaging.destination.subscription.name"
        ],
        "messaging.destination.name": "otel.obs.placed",
        "tidings.topic": "obs.placed",
        "server.address": "127.0.0.1",
        "server.port": nats_server.port,
        "messaging.client.id": attributes["messaging.client.id"],
        "messaging.message.body.size": len(encode_envelope(delivery.envelope)[1]),
        "messaging.message.id": delivery.envelope.id,
        "tidings.delivery_attempt": 1,
        "messaging.consumer.group.name": "shipping",
    }
    assert shipped["links"] == [[trace_id, f"{send.context.span_id:016x}"]]
    assert notified["attributes"]["messaging.consumer.group.name"] == "notify"


async def test_the_process_span_links_its_creation_context_and_names_the_broker(
    nats_server: NatsServer, spans: Spans
) -> None:
    """A NATS delivery's process span: child of the send span and linked to it, naming the
    subject (the topic in ``tidings.topic``), the server, the client and the body's size."""
    transport = NatsTransport(nats_server.url, prefix="links", stream=StreamSettings(name="LINKS"))
    async with tidings.Bus(transport=transport) as bus:
        Tracing(bus, tracer_provider=spans.provider)
        handled = asyncio.Event()
        bus.subscribe(Placed, lambda placed: handled.set(), group="links")
        await bus.start()
        client_id = transport.client_id
        delivery = await bus.emit(Placed(7))
        await asyncio.wait_for(handled.wait(), TIMEOUT)
    [send] = spans.named("send obs.placed")
    [process] = spans.named("process obs.placed")
    body = encode_envelope(delivery.envelope)[1]
    assert client_id is not None
    assert client_id.isdigit()  # the id the server gave
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert [(link.context.trace_id, link.context.span_id) for link in process.links] == [
        (send.context.trace_id, send.context.span_id)
    ]
    attributes = dict(process.attributes or {})
    assert attributes[messaging.MESSAGING_DESTINATION_NAME] == "links.obs.placed"
    assert attributes[messaging.MESSAGING_DESTINATION_TEMPLATE] == "links.obs.placed"
    assert attributes["tidings.topic"] == "obs.placed"
    assert attributes[server.SERVER_ADDRESS] == "127.0.0.1"
    assert attributes[server.SERVER_PORT] == nats_server.port
    assert attributes[messaging.MESSAGING_CLIENT_ID] == client_id
    assert attributes[messaging.MESSAGING_MESSAGE_BODY_SIZE] == len(body) > 0
    assert attributes[messaging.MESSAGING_MESSAGE_ID] == delivery.envelope.id
    assert attributes[messaging.MESSAGING_CONSUMER_GROUP_NAME] == "links"
    sent = dict(send.attributes or {})
    assert sent[messaging.MESSAGING_DESTINATION_NAME] == "links.obs.placed"
    assert sent["tidings.topic"] == "obs.placed"
    assert sent[server.SERVER_ADDRESS] == "127.0.0.1"
    assert sent[server.SERVER_PORT] == nats_server.port
    assert sent[messaging.MESSAGING_CLIENT_ID] == client_id
    assert messaging.MESSAGING_MESSAGE_BODY_SIZE not in sent  # not known before encoding
