"""CloudEvents over NATS judged by the official Python SDK (``cloudevents``): a raw nats-py
client publishes what the SDK produced (binary and structured) on a real nats-server,
tidings receives it and publishes it again, and the SDK parses what tidings put on the
wire; every attribute must survive. The NATS binding's headers are the HTTP binding's
(``ce-*``, ``content-type``, percent-encoded values), so the SDK's HTTP functions make and
read them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import tidings
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import HeaderError
from tidings.testing.nats_server import NatsServer
from tidings.testing.transport_conformance import (
    Collector,
    ConformanceOrder,
    DeadLetters,
    make_envelope,
)
from tidings.transports.nats import NatsTransport, StreamSettings

from .sdk_events import sdk_order

Factory = Callable[..., NatsTransport]
WAIT = 10.0


def sdk_event(**changes: Any) -> CloudEvent:
    return sdk_order(**{"id": "sdk-n1", **changes})


def _other(nats_factory: Factory, **options: Any) -> NatsTransport:
    """A transport on a prefix and stream of its own, beside the test's default one."""
    name = uuid.uuid4().hex[:8]
    return nats_factory(prefix=f"o{name}", stream=StreamSettings(name=f"O{name}"), **options)


def _recased(headers: dict[str, str]) -> dict[str, str]:
    cases = {"ce-id": "Ce-Id", "ce-specversion": "CE-SpecVersion", "content-type": "Content-Type"}
    return {cases.get(name, name): value for name, value in headers.items()}


def _comparable(event: Any) -> dict[str, Any]:
    attributes = dict(event.get_attributes())
    attributes.pop("hlc", None)  # tidings' own extension, added on the way out
    return {**attributes, "data": event.get_data()}


async def _pass_through(
    nats_factory: Factory,
    nats_server: NatsServer,
    headers: dict[str, str],
    body: bytes,
    *,
    structured_out: bool,
) -> tuple[Envelope[Any], dict[str, str], bytes]:
    """Publish ``headers``/``body`` raw on ``<in>.ce.order``; return what a tidings
    transport received, and the headers and body another one put on the wire for it."""
    inbound, outbound = nats_factory(), _other(nats_factory, structured=structured_out)
    async with inbound, outbound:
        got = Collector()
        await inbound.subscribe("ce.>", got)
        nc = await nats.connect(nats_server.url)
        try:
            out = await nc.jetstream().subscribe(
                f"{outbound.subjects.prefix}.ce.order", stream=outbound.stream.name
            )
            await nc.jetstream().publish(
                f"{inbound.subjects.prefix}.ce.order", body, headers=headers
            )
            await got.wait_count(1, WAIT)
            envelope = got.messages[0].envelope
            await outbound.publish(envelope)
            msg = await out.next_msg(timeout=WAIT)
        finally:
            await nc.close()
    return envelope, dict(msg.headers or {}), bytes(msg.data)


@pytest.mark.parametrize("mode_in", ["binary", "structured"])
@pytest.mark.parametrize("mode_out", ["binary", "structured"])
async def test_sdk_events_pass_through_tidings_over_nats_unchanged(
    nats_factory: Factory, nats_server: NatsServer, mode_in: str, mode_out: str
) -> None:
    original = sdk_event()
    to_wire = sdk_http.to_binary if mode_in == "binary" else sdk_http.to_structured
    sent = to_wire(original, JSONFormat())
    envelope, headers, body = await _pass_through(
        nats_factory,
        nats_server,
        _recased(sent.headers),
        sent.body,
        structured_out=mode_out == "structured",
    )
    assert (envelope.id, envelope.topic, envelope.source) == (
        "sdk-n1",
        "ce.order",
        "billing service/ü",
    )
    assert envelope.key == "customer-42"
    assert envelope.payload == {"order_id": "o1", "amount": 12.5}
    assert dict(envelope.headers) == {"requestid": "r 1/ü"}
    assert dict(envelope.attributes) == {
        "type": "com.example.order.placed",
        "subject": "order 7",
        "dataschema": "https://example.com/schemas/order.json",
    }
    if mode_out == "binary":
        assert headers["ce-source"] == "billing%20service/%C3%BC"
        assert headers["ce-time"] == "2026-01-02T12:30:45.123456Z"
    back = sdk_http.from_http(sdk_http.HTTPMessage(headers, body), JSONFormat())
    assert _comparable(back) == _comparable(original)


async def test_binary_data_and_lowercase_times_pass_through(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    original = sdk_event(data=b"\x00\x01\xfe\xff", datacontenttype="application/octet-stream")
    sent = sdk_http.to_binary(original, JSONFormat())
    headers = {**sent.headers, "ce-time": "2026-01-02t12:30:45.123456z"}
    envelope, out_headers, body = await _pass_through(
        nats_factory, nats_server, headers, sent.body, structured_out=False
    )
    assert envelope.payload == b"\x00\x01\xfe\xff"
    assert out_headers["ce-time"] == "2026-01-02t12:30:45.123456z"  # kept as given
    assert body == b"\x00\x01\xfe\xff"
    back = sdk_http.from_http(sdk_http.HTTPMessage(out_headers, body), JSONFormat())
    assert _comparable(back) == _comparable(original)


async def test_tidings_events_with_any_header_parse_in_the_sdk(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    envelope = make_envelope(
        HybridClock(),
        "o-5",
        key="k 1",
        headers={"traceparent": "00-aa-bb-01", "x-request-id": "req 7", "note": "two\r\nlines"},
    )
    transport, structured = nats_factory(), _other(nats_factory, structured=True)
    async with transport, structured:
        got = Collector()
        await transport.subscribe("conformance.>", got)
        nc = await nats.connect(nats_server.url)
        try:
            messages = []
            for publisher in (transport, structured):
                sub = await nc.jetstream().subscribe(
                    f"{publisher.subjects.prefix}.conformance.order", stream=publisher.stream.name
                )
                await publisher.publish(envelope)
                messages.append(await sub.next_msg(timeout=WAIT))
        finally:
            await nc.close()
        await got.wait_count(1, WAIT)
    binary_msg, structured_msg = messages
    assert binary_msg.headers is not None
    assert structured_msg.headers is not None
    assert binary_msg.headers["x-request-id"] == "req 7"
    assert "ce-x-request-id" not in binary_msg.headers
    assert structured_msg.headers["x-request-id"] == "req 7"
    events = [
        sdk_http.from_http(sdk_http.HTTPMessage(dict(m.headers or {}), m.data), JSONFormat())
        for m in messages
    ]
    assert events[0].get_attributes() == events[1].get_attributes()  # time too: same text
    assert events[0].get_id() == envelope.id
    assert events[0].get_type() == "conformance.order"
    assert events[0].get_extension("partitionkey") == "k 1"
    assert events[0].get_extension("note") == "two\r\nlines"
    assert events[0].get_data() == {"order_id": "o-5", "amount": 3.0}
    received = got.messages[0].envelope
    assert received.payload == ConformanceOrder("o-5", 3.0)
    assert dict(received.headers) == dict(envelope.headers)
    assert received.time == envelope.time
    assert not received.attributes


@pytest.mark.parametrize("claims_cloudevent", [True, False])
async def test_an_event_without_id_is_refused_unless_it_claims_no_cloudevent(
    nats_factory: Factory, nats_server: NatsServer, claims_cloudevent: bool
) -> None:
    headers = {"ce-source": "go", "ce-type": "com.example.x", "content-type": "application/json"}
    if claims_cloudevent:
        headers["ce-specversion"] = "1.0"
    transport = nats_factory()
    async with transport:
        got = Collector()
        await transport.subscribe("ce.>", got)
        dead = DeadLetters()
        await transport.subscribe_dead_letters(dead)
        nc = await nats.connect(nats_server.url)
        try:
            subject = f"{transport.subjects.prefix}.ce.order"
            await nc.jetstream().publish(subject, b'{"n":1}', headers=headers)
            await nc.jetstream().publish(subject, b'{"n":2}', headers={"Nats-Msg-Id": "m-2"})
        finally:
            await nc.close()
        if claims_cloudevent:
            await dead.wait_count(1, WAIT)
            await got.wait_count(1, WAIT)
        else:
            await got.wait_count(2, WAIT)
    ids = [m.envelope.id for m in got.messages]
    if claims_cloudevent:
        assert ids == ["m-2"]
        [record] = dead.records
        assert record.reason.startswith("CloudEventError: the CloudEvent lacks its required")
        assert "'id'" in record.reason
    else:
        # no ce-specversion: a plain NATS message, named by its stream sequence
        assert ids == [f"{transport.stream.name}-1", "m-2"]
        assert dead.records == []


@dataclass(frozen=True)
class Ping:
    n: int


async def test_bus_publish_with_a_non_attribute_header_emits_an_event_the_sdk_reads(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    transport = nats_factory()
    seen: list[Envelope[Any]] = []
    arrived = asyncio.Event()

    def on_ping(envelope: Envelope[Ping]) -> None:
        seen.append(envelope)
        arrived.set()

    async with tidings.Bus(transport=transport) as bus:
        bus.subscribe("ce.ping", on_ping)
        await bus.start()
        nc = await nats.connect(nats_server.url)
        try:
            sub = await nc.jetstream().subscribe(
                f"{transport.subjects.prefix}.ce.ping", stream=transport.stream.name
            )
            bus.publish(Ping(1), topic="ce.ping", headers={"x-request-id": "r1", "requestid": "r2"})
            msg = await sub.next_msg(timeout=WAIT)
        finally:
            await nc.close()
        await asyncio.wait_for(arrived.wait(), WAIT)
        with pytest.raises(HeaderError, match="'subject'"):
            await bus.emit(Ping(2), topic="ce.ping", headers={"subject": "s"})
    event = sdk_http.from_http(
        sdk_http.HTTPMessage(dict(msg.headers or {}), msg.data), JSONFormat()
    )
    assert event.get_extension("requestid") == "r2"
    assert "x-request-id" not in event.get_attributes()
    assert (msg.headers or {})["x-request-id"] == "r1"
    assert [dict(e.headers) for e in seen] == [{"x-request-id": "r1", "requestid": "r2"}]
