"""OpenTelemetry tracing in process: producer and consumer spans, propagation, sampling."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.semconv._incubating.attributes import server_attributes as server
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, generate_latest

import tidings
from tidings.bus import observation_port
from tidings.observability import Metrics, Tracing, replaying
from tidings.observability import tracing as tracing_module
from tidings.transports import DeliveryPolicy, MemoryBroker, MemoryTransport

from .conftest import Spans, parse, value

TIMEOUT = 10.0


@tidings.event("trace.order")
@dataclass(frozen=True)
class Order:
    n: int


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


async def test_one_trace_holds_the_publish_and_every_kind_of_handler(spans: Spans) -> None:
    async with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=spans.provider)
        finished = asyncio.Event()
        worker_done = threading.Event()

        def inline(order: Order) -> None:
            pass

        async def later(order: Order) -> None:
            await asyncio.sleep(0)
            finished.set()

        def queued(order: Order) -> None:
            worker_done.set()

        bus.subscribe(Order, inline)
        bus.subscribe(Order, later)
        bus.subscribe(Order, queued, mode="queued")
        with bus.record() as recorded:
            envelope = bus.publish(Order(1))
        await asyncio.wait_for(finished.wait(), TIMEOUT)
        assert await asyncio.to_thread(worker_done.wait, TIMEOUT)
        assert await bus.subscriptions()[-1].drained(TIMEOUT)
    [send] = spans.named("send trace.order")
    process = spans.named("process trace.order")
    assert send.kind == SpanKind.PRODUCER
    assert send.parent is None
    client_id = f"{envelope.source}/{envelope.id[-16:]}"  # the bus's source and node
    assert dict(send.attributes or {}) == {
        "messaging.system": "tidings",
        "messaging.destination.name": "trace.order",
        "tidings.topic": "trace.order",
        "messaging.client.id": client_id,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": envelope.id,
    }
    assert len(process) == 3
    names = set()
    for span in process:
        assert span.kind == SpanKind.CONSUMER
        assert span.context.trace_id == send.context.trace_id
        assert parent_of(span) == send.context.span_id
        assert [ids_of(link.context) for link in span.links] == [ids(send)]  # its creation
        attributes = dict(span.attributes or {})
        assert attributes["messaging.message.id"] == envelope.id
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.destination.name"] == "trace.order"
        assert attributes["tidings.topic"] == "trace.order"
        assert attributes["messaging.client.id"] == client_id
        # In process: no broker, and the body is never encoded, so its size is not known.
        assert not {"server.address", "server.port", "messaging.message.body.size"} & set(
            attributes
        )
        names.add(str(attributes["messaging.destination.subscription.name"]))
    assert {name.rsplit(".", 1)[1] for name in names} == {"inline", "later", "queued"}
    [seen] = recorded.envelopes
    traceparent = seen.headers["traceparent"]
    assert traceparent.startswith(f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-")
    assert int(traceparent[-2:], 16) & 1  # sampled


async def test_emit_is_traced_and_async_spans_last_until_the_handler_ends(spans: Spans) -> None:
    async with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=spans.provider)

        async def slow(order: Order) -> None:
            await asyncio.sleep(0.02)
            inner = trace.get_current_span()
            assert inner.get_span_context().is_valid  # the handler runs in its span

        bus.subscribe(Order, slow)
        await bus.emit(Order(2))
        assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaked
    [send] = spans.named("send trace.order")
    [process] = spans.named("process trace.order")
    assert parent_of(process) == send.context.span_id
    assert process.end_time is not None
    assert process.start_time is not None
    assert process.end_time - process.start_time >= 15_000_000


def test_handler_errors_are_recorded_on_their_spans(spans: Spans) -> None:
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=spans.provider)

        def declines(order: Order) -> None:
            raise ValueError("card declined")

        letters: list[tidings.DeadLetter] = []
        bus.subscribe(Order, declines)
        bus.subscribe(tidings.DeadLetter, letters.append)
        bus.publish(Order(3))
    [span] = spans.named("process trace.order")
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "builtins.ValueError"
    [event] = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.message"] == "card declined"
    [letter] = letters
    assert "traceparent" in letter.envelope.headers


def test_baggage_and_a_given_traceparent_are_carried(spans: Spans) -> None:
    seen: list[Any] = []
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=spans.provider)
        bus.subscribe(Order, lambda order: seen.append(baggage.get_baggage("tenant")))
        token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            bus.publish(Order(4))
        finally:
            otel_context.detach(token)
        upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        bus.publish(Order(5), headers={"traceparent": upstream})
    assert seen == ["acme", None]
    send_a, send_b = spans.named("send trace.order")
    assert send_b.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent_of(send_b) == 0xB7AD6B7169203331
    assert send_a.context.trace_id != send_b.context.trace_id


async def test_a_malformed_traceparent_starts_a_new_trace_and_is_counted(spans: Spans) -> None:
    registry = CollectorRegistry()
    handled = asyncio.Event()
    policy = DeliveryPolicy(max_deliver=1, ack_wait=5.0)
    async with tidings.Bus(transport=MemoryTransport(MemoryBroker(), policy=policy)) as bus:
        tracing = Tracing(bus, tracer_provider=spans.provider)
        Metrics(bus, registry=registry)
        bus.subscribe(Order, lambda order: None)
        bus.subscribe(Order, lambda order: handled.set())  # after the first, same message
        await bus.start()
        assert bus._remote is not None
        await bus._remote.transport.publish_raw(
            "trace.order",
            b'{"n": 6}',
            {"ce-specversion": "1.0", "ce-id": "bad-1", "ce-traceparent": "00-zz-not-a-trace"},
        )
        await asyncio.wait_for(handled.wait(), TIMEOUT)
    process = spans.named("process trace.order")
    assert len(process) == 2
    for span in process:
        assert span.parent is None  # a new trace
        attributes = dict(span.attributes or {})
        assert attributes["messaging.message.id"] == "bad-1"
        assert attributes["tidings.delivery_attempt"] == 1
        assert span.status.status_code == StatusCode.UNSET
    assert tracing.invalid_contexts == 1  # once per message, not per handler
    from prometheus_client import generate_latest

    assert "tidings_trace_context_invalid_total 1.0" in generate_latest(registry).decode()


def test_a_malformed_traceparent_given_to_publish_is_replaced(spans: Spans) -> None:
    with tidings.Bus() as bus:
        tracing = Tracing(bus, tracer_provider=spans.provider)
        bus.subscribe(Order, lambda order: None)
        with bus.record() as recorded:
            bus.publish(Order(7), headers={"traceparent": "garbage"})
    [send] = spans.named("send trace.order")
    assert send.parent is None
    assert recorded.envelopes[0].headers["traceparent"].startswith("00-")
    assert tracing.invalid_contexts == 1


def test_without_sampling_events_take_the_fast_path_untouched() -> None:
    unsampled = Spans(sampler=ParentBased(ALWAYS_OFF))
    other = Spans()
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=unsampled.provider)
        calls: list[int] = []
        bus.subscribe(Order, lambda order: calls.append(order.n))
        with bus.record() as recorded:
            bus.publish(Order(1))
        assert "traceparent" not in recorded.envelopes[0].headers
        assert bus._route(Order, None).fast is not None
        # Inside a sampled span, ParentBased samples the publish and its handlers.
        with other.provider.get_tracer("test").start_as_current_span("request") as request:
            bus.publish(Order(2))
    assert calls == [1, 2]
    names = sorted(s.name for s in unsampled.finished())
    assert names == ["process trace.order", "send trace.order"]
    [send] = unsampled.named("send trace.order")
    assert parent_of(send) == request.get_span_context().span_id


def test_always_off_and_no_sdk_trace_nothing() -> None:
    off = Spans(sampler=ALWAYS_OFF)
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=off.provider)
        bus.subscribe(Order, lambda order: None)
        with bus.record() as recorded:
            bus.publish(Order(1))
    assert off.finished() == ()
    assert "traceparent" not in recorded.envelopes[0].headers
    if getattr(trace, "_TRACER_PROVIDER", None) is not None:
        pytest.skip("a global tracer provider is set in this process")
    with tidings.Bus() as bus:
        tracing = Tracing(bus)  # the global provider: none configured
        assert not tracing.gate(None)
        with bus.record() as recorded:
            bus.publish(Order(2))
    assert "traceparent" not in recorded.envelopes[0].headers


def test_batches_get_one_span_linked_to_each_event(spans: Spans) -> None:
    done = threading.Event()
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=spans.provider)
        started, release = threading.Event(), threading.Event()

        def first(order: Order) -> None:
            if order.n == 0:
                started.set()
                assert release.wait(TIMEOUT)

        def batch(orders: list[Order]) -> None:
            if len(orders) == 3:
                done.set()

        bus.subscribe(Order, first, mode="queued")
        bus.subscribe(Order, batch, batch=tidings.Batch(max_size=3, max_wait=5.0, adaptive=False))
        bus.publish(Order(0))
        assert started.wait(TIMEOUT)
        release.set()
        bus.publish(Order(1))
        bus.publish(Order(2))
        assert done.wait(TIMEOUT)
    sends = spans.named("send trace.order")
    [batch_span] = [
        s
        for s in spans.named("process trace.order")
        if "messaging.batch.message_count" in (s.attributes or {})
    ]
    assert (batch_span.attributes or {})["messaging.batch.message_count"] == 3
    assert {link.context.span_id for link in batch_span.links} == {s.context.span_id for s in sends}


def test_a_replayed_event_links_to_its_original_trace(spans: Spans) -> None:
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=spans.provider)
        sub = bus.subscribe(Order, lambda order: None)
        original = bus.publish(Order(8))
        # What the durable log's replay does for each stored event:
        tracer = spans.provider.get_tracer("test")
        with tracer.start_as_current_span("replay") as replay, replaying():
            sub.call(sub.argument(original))
    [send] = spans.named("send trace.order")
    first, again = spans.named("process trace.order")
    assert parent_of(first) == send.context.span_id
    assert again.context.trace_id == replay.get_span_context().trace_id
    assert parent_of(again) == replay.get_span_context().span_id
    assert [ids_of(link.context) for link in again.links] == [ids(send)]
    assert (again.attributes or {})["tidings.replay"] is True


def ids_of(context: trace.SpanContext) -> tuple[int, int]:
    return context.trace_id, context.span_id


def test_forget_takes_the_hooks_off(spans: Spans) -> None:
    with tidings.Bus() as bus:
        tracing = Tracing(bus, tracer_provider=spans.provider)
        sub = bus.subscribe(Order, lambda order: None)
        assert type(sub) is not tidings.Subscription
        assert type(bus) is not tidings.Bus  # observed: publish and emit call the hooks
        tracing.forget(bus)
        assert type(sub) is tidings.Subscription
        assert type(bus) is tidings.Bus
        bus.publish(Order(9))
    assert spans.finished() == ()


def test_attribute_names_are_the_semantic_conventions() -> None:
    """The names tracing writes are those of opentelemetry-semantic-conventions (which the
    API, tidings' only OpenTelemetry dependency, does not install)."""
    conventions = {**vars(messaging), **vars(server)}
    names = [n for n in vars(tracing_module) if n.startswith(("MESSAGING_", "SERVER_"))]
    assert len(names) == 13
    for name in names:
        assert getattr(tracing_module, name) == conventions[name], name
    assert tracing_module.ERROR_TYPE == error_attributes.ERROR_TYPE


def test_without_sampling_only_a_sampled_parent_or_traceparent_traces() -> None:
    """ParentBased(ALWAYS_OFF): a publish outside any span, with baggage only, or inside an
    unsampled span is not traced; one inside a sampled span, or given a sampled traceparent,
    is (a child of it); and after the sampled span ends, publishing is untraced again."""
    unsampled = Spans(sampler=ParentBased(ALWAYS_OFF))
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=unsampled.provider)
        bus.subscribe(Order, lambda order: None)
        with bus.record() as recorded:
            request = publish_in_contexts(bus)
            bus.publish(Order(6))
    traced = ["traceparent" in env.headers for env in recorded.envelopes]
    assert traced == [False, False, False, True, True, False]
    sends = unsampled.named("send trace.order")
    assert len(sends) == 2
    assert len(unsampled.named("process trace.order")) == 2
    assert parent_of(sends[0]) == request
    assert sends[1].context.trace_id == int(GIVEN_TRACE, 16)
    assert parent_of(sends[1]) == int(GIVEN_PARENT, 16)


GIVEN_TRACE, GIVEN_PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def publish_in_contexts(bus: tidings.Bus) -> int:
    """Publish ``Order(1)`` to ``Order(5)``: outside any span, with baggage only, inside an
    unsampled span, inside a sampled span (whose span id it returns), given a sampled
    traceparent (:data:`GIVEN_TRACE`, :data:`GIVEN_PARENT`)."""
    bus.publish(Order(1))
    token = otel_context.attach(baggage.set_baggage("tenant", "t1"))
    try:
        bus.publish(Order(2))
    finally:
        otel_context.detach(token)
    with Spans(sampler=ALWAYS_OFF).provider.get_tracer("test").start_as_current_span("off"):
        bus.publish(Order(3))
    with Spans().provider.get_tracer("test").start_as_current_span("request") as request:
        bus.publish(Order(4))
    bus.publish(Order(5), headers={"traceparent": f"00-{GIVEN_TRACE}-{GIVEN_PARENT}-01"})
    span_id: int = request.get_span_context().span_id
    return span_id


@pytest.mark.parametrize("with_metrics", [False, True])
def test_on_the_hot_path_only_a_sampled_parent_or_traceparent_traces(with_metrics: bool) -> None:
    """ParentBased(ALWAYS_OFF), a route of plain sync handlers only (the bus's hot path,
    which carries the gate): a publish outside any span, with baggage only or inside an
    unsampled span is not traced; one inside a sampled span, or given a sampled
    traceparent, is, with each handler's call in a span of its trace; every one is
    delivered to both handlers and, with metrics, counted once."""
    unsampled = Spans(sampler=ParentBased(ALWAYS_OFF))
    registry = CollectorRegistry()
    seen: list[int] = []
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=unsampled.provider)
        if with_metrics:
            Metrics(bus, registry=registry, time_every=3)
        bus.subscribe(Order, lambda order: seen.append(order.n))
        bus.subscribe(Order, lambda order: seen.append(-order.n))
        assert observation_port(bus).route(Order, None).fast is not None  # the hot path
        request = publish_in_contexts(bus)
        for n in range(6, 16):
            bus.publish(Order(n))
    assert seen == [m for n in range(1, 16) for m in (n, -n)]
    sends = unsampled.named("send trace.order")
    assert len(sends) == 2
    assert parent_of(sends[0]) == request
    assert sends[1].context.trace_id == int(GIVEN_TRACE, 16)
    processes = unsampled.named("process trace.order")
    parents = collections.Counter(parent_of(p) for p in processes)
    assert parents == {sends[0].context.span_id: 2, sends[1].context.span_id: 2}
    if with_metrics:
        samples = parse(generate_latest(registry).decode())
        assert value(samples, "tidings_publish_duration_seconds_count", topic="trace.order") == 15


LATE_PROVIDER = """
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tidings
from tidings.observability import Tracing


@tidings.event("late.order")
@dataclass(frozen=True)
class Order:
    n: int


exporter = InMemorySpanExporter()
with tidings.Bus() as bus:
    Tracing(bus)  # no tracer provider set yet
    bus.subscribe(Order, lambda order: None)
    with bus.record() as recorded:
        bus.publish(Order(1))
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        before = type(bus)  # each install swaps in a class of its own, with the publisher
        bus.publish(Order(2))
        rebuilt = type(bus) is not before
        bus.publish(Order(3))
print(*("traceparent" in env.headers for env in recorded.envelopes), rebuilt)
print(*sorted(span.name for span in exporter.get_finished_spans()))
"""


def test_a_tracer_provider_set_later_traces_from_its_first_publish() -> None:
    """``Tracing(bus)`` before any tracer provider is set traces nothing; the first publish
    after one (sampling every trace) is set is traced and rebuilds the hook for its sampler,
    and the next is traced by that hook. In a process of its own: the global provider can
    be set once."""
    command = [sys.executable, "-c", LATE_PROVIDER]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    flags, names = result.stdout.splitlines()
    assert flags.split() == ["False", "True", "True", "True"]
    assert names.split() == ["process", "late.order"] * 2 + ["send", "late.order"] * 2


LATE_NEVER = """
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import tidings
from tidings.observability import Tracing


@tidings.event("late.order")
@dataclass(frozen=True)
class Order:
    n: int


calls = []
with tidings.Bus() as bus:
    Tracing(bus)  # no tracer provider set yet
    bus.subscribe(Order, lambda order: calls.append(order.n))
    bus.subscribe(Order, lambda order: None, mode="queued")  # off the hot path
    bus.publish(Order(1))
    trace.set_tracer_provider(TracerProvider(sampler=ALWAYS_OFF))
    bus.publish(Order(2))  # resolves the mode (never traced): the publisher is taken off
    bus.publish(Order(3))
print(*calls)
"""


def test_a_tracer_provider_that_never_samples_set_later_delivers_each_event_once() -> None:
    """The publish that finds a provider never sampling takes the observed publisher off
    while its hook publishes; the bus does not dispatch that event a second time. In a
    process of its own: the global provider can be set once."""
    command = [sys.executable, "-c", LATE_NEVER]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "2", "3"]


@pytest.mark.parametrize("with_metrics", [False, True])
def test_a_traced_bus_refuses_options_by_position(spans: Spans, with_metrics: bool) -> None:
    """Traced (and counted), ``publish`` is Bus.publish: its options by name only."""
    with tidings.Bus() as bus:
        Tracing(bus, tracer_provider=spans.provider)
        if with_metrics:
            Metrics(bus, registry=CollectorRegistry())
        with pytest.raises(TypeError, match="positional"):
            bus.publish(Order(1), "trace.elsewhere")  # type: ignore[call-arg]
        bus.publish(Order(2), topic="trace.named")
    assert [s.name for s in spans.named("send trace.named")] == ["send trace.named"]
