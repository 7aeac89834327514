"""The durable log: replayed events link to their original traces; appends and reads counted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest

import tidings
from tidings.observability import Metrics, Tracing

from .conftest import Spans, parse, value

TIMEOUT = 10.0


@tidings.event("store.order")
@dataclass(frozen=True)
class Order:
    n: int


async def test_a_replayed_event_links_to_its_original_trace(spans: Spans) -> None:
    registry = CollectorRegistry()
    async with tidings.Bus(store=tidings.MemoryStore()) as bus:
        Tracing(bus, tracer_provider=spans.provider)
        Metrics(bus, registry=registry)
        live: list[int] = []
        bus.subscribe(Order, lambda order: live.append(order.n))
        for n in range(3):
            bus.publish(Order(n))
        assert live == [0, 1, 2]
        replayed: list[int] = []
        done = asyncio.Event()

        def catch_up(order: Order) -> None:
            replayed.append(order.n)
            if len(replayed) == 3:
                done.set()

        tracer = spans.provider.get_tracer("test")
        with tracer.start_as_current_span("rebuild") as rebuild:
            bus.subscribe(Order, catch_up, from_=0)  # a catch-up subscription: the log again
        await asyncio.wait_for(done.wait(), TIMEOUT)
        total = await bus.replay(lambda s, order: s + order.n, 0)
        samples = parse(generate_latest(registry).decode())
    assert total == 3
    sends = {s.context.span_id: s for s in spans.named("send store.order")}
    assert len(sends) == 3
    processes = spans.named("process store.order")
    first = [s for s in processes if "tidings.replay" not in (s.attributes or {})]
    again = [s for s in processes if (s.attributes or {}).get("tidings.replay") is True]
    assert len(first) == 3
    for span in first:  # a live delivery: child of its creation context, and linked to it
        assert span.parent is not None
        assert span.parent.span_id in sends
        assert [link.context.span_id for link in span.links] == [span.parent.span_id]
    assert len(again) == 3
    for span in again:
        [link] = span.links
        original = sends[link.context.span_id]
        assert link.context.trace_id == original.context.trace_id
        assert span.context.trace_id == rebuild.get_span_context().trace_id
        assert (span.attributes or {})["tidings.replay"] is True
    follower = {"topic": "store.order", "subscription": f"{__name__}.{catch_up.__qualname__}"}
    assert value(samples, "tidings_events_total", status="success", **follower) == 3
    assert value(samples, "tidings_store_appends_total") == 3
    assert value(samples, "tidings_store_reads_total") == 6  # the catch-up and the fold
