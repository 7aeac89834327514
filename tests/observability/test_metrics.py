"""Prometheus metrics: exact counts after known traffic, scraped and parsed as Prometheus would."""

from __future__ import annotations

import asyncio
import collections
import inspect
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import tidings
from tidings import DeadLetter
from tidings.bus import observation_port
from tidings.observability import Metrics, Tracing, metrics_app, serve_metrics
from tidings.transports import DeliveryPolicy, MemoryBroker, MemoryTransport

from .conftest import Spans, asgi_get, parse, value

TIMEOUT = 10.0


@tidings.event("obs.order")
@dataclass(frozen=True)
class Order:
    n: int


async def test_known_traffic_is_scraped_exactly() -> None:
    """100 published; 3 handler failures (2 in a handler, 1 in the dead-letter handler);
    5 dropped by a drop_newest buffer; 2 dead-lettered."""
    registry = CollectorRegistry()
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry)

        def charge(order: Order) -> None:
            if order.n in (13, 42):
                raise ValueError(f"card declined for {order.n}")

        letters: list[DeadLetter] = []

        def on_dead(letter: DeadLetter) -> None:
            letters.append(letter)
            if len(letters) == 1:
                raise RuntimeError("the dead-letter handler fails once")

        started, release = threading.Event(), threading.Event()

        def archive(order: Order) -> None:
            if order.n == 0:
                started.set()
                assert release.wait(TIMEOUT)

        charging = bus.subscribe(Order, charge)
        dead = bus.subscribe(DeadLetter, on_dead)
        archiving = bus.subscribe(Order, archive, mode="queued", maxsize=94, overflow="drop_newest")
        bus.publish(Order(0))
        assert started.wait(TIMEOUT), "the archive worker took the first order"
        for n in range(1, 100):
            bus.publish(Order(n))  # 94 fit in the buffer, 5 are dropped
        release.set()
        assert await archiving.drained(TIMEOUT)

        status, body = await asgi_get(metrics_app(registry))
    assert status == 200
    samples = parse(body.decode())

    def events(sub: tidings.Subscription[Any], status: str) -> float:
        return value(
            samples, "tidings_events_total", topic=sub.pattern, subscription=sub.name, status=status
        )

    assert [events(charging, s) for s in ("success", "failed", "dropped", "dead_lettered")] == [
        98,
        2,
        0,
        2,
    ]
    assert [events(dead, s) for s in ("success", "failed", "dropped", "dead_lettered")] == [
        1,
        1,
        0,
        0,
    ]
    assert [events(archiving, s) for s in ("success", "failed", "dropped", "dead_lettered")] == [
        95,
        0,
        5,
        0,
    ]
    assert len(letters) == 2
    labels = {"topic": "obs.order"}
    assert value(samples, "tidings_publish_duration_seconds_count", **labels) == 100
    for sub, handled in ((charging, 100), (archiving, 95)):
        one = {"topic": sub.pattern, "subscription": sub.name}
        assert value(samples, "tidings_event_latency_seconds_count", **one) == handled
        assert value(samples, "tidings_event_latency_seconds_bucket", le="+Inf", **one) == handled
        assert value(samples, "tidings_event_latency_seconds_sum", **one) > 0
        assert value(samples, "tidings_queue_high_water", **one) == (94 if sub is archiving else 0)
        assert value(samples, "tidings_queue_depth", **one) == 0
    loss = {
        sub.name: value(
            samples, "tidings_event_loss_ratio", topic=sub.pattern, subscription=sub.name
        )
        for sub in (charging, dead, archiving)
    }
    assert loss == {charging.name: 0.02, dead.name: 0.0, archiving.name: 0.05}
    assert value(samples, "tidings_trace_context_invalid_total") == 0
    assert value(samples, "tidings_store_appends_total") == 0


async def test_a_transport_counts_redeliveries_and_dead_letters() -> None:
    registry = CollectorRegistry()
    policy = DeliveryPolicy(max_deliver=2, backoff=0.01, backoff_max=0.05, ack_wait=5.0)
    attempts: collections.Counter[int] = collections.Counter()
    handled: list[int] = []
    finished = asyncio.Event()
    async with tidings.Bus(transport=MemoryTransport(MemoryBroker(), policy=policy)) as bus:
        Metrics(bus, registry=registry)

        async def handle(order: Order) -> None:
            attempts[order.n] += 1
            if order.n == 5 or (order.n == 3 and attempts[3] == 1):
                raise ValueError(f"order {order.n} failed")
            handled.append(order.n)

        dead: list[DeadLetter] = []

        def check(_: object) -> None:
            if len(handled) == 9 and dead:
                finished.set()

        def on_dead(letter: DeadLetter) -> None:
            dead.append(letter)
            check(letter)

        def never_called(order: Order) -> None:
            raise AssertionError(f"order {order.n} passed where=")

        sub = bus.subscribe(Order, handle)
        bus.subscribe(DeadLetter, on_dead)
        # Neither is called again on a redelivery: one succeeded, one filters everything out.
        checking = bus.subscribe(Order, check, priority=-1)
        skipping = bus.subscribe(Order, never_called, where=lambda order: False)
        await bus.start()
        for n in range(10):
            await bus.emit(Order(n))
        await asyncio.wait_for(finished.wait(), TIMEOUT)
        samples = parse((await asgi_get(metrics_app(registry)))[1].decode())
    labels = {"topic": sub.pattern, "subscription": sub.name}
    assert value(samples, "tidings_events_total", status="success", **labels) == 9
    assert value(samples, "tidings_events_total", status="failed", **labels) == 3
    assert value(samples, "tidings_events_total", status="dead_lettered", **labels) == 1
    assert value(samples, "tidings_redeliveries_total", **labels) == 2
    for other in (checking, skipping):
        other_labels = {"topic": other.pattern, "subscription": other.name}
        assert value(samples, "tidings_redeliveries_total", **other_labels) == 0
    assert value(samples, "tidings_event_latency_seconds_count", **labels) == 9
    assert value(samples, "tidings_event_loss_ratio", **labels) == 0.1


async def test_async_handlers_are_timed_per_call() -> None:
    registry = CollectorRegistry()
    async with tidings.Bus() as bus:
        Metrics(bus, registry=registry)
        gate = asyncio.Event()
        calls: list[int] = []

        async def quick(order: Order) -> None:
            calls.append(order.n)

        async def slow(order: Order) -> None:
            await gate.wait()

        subs = [bus.subscribe(Order, quick), bus.subscribe(Order, slow)]
        for n in range(5):
            bus.publish(Order(n))
        gate.set()
        report = await bus.aclose(TIMEOUT)
        assert report.clean
        samples = parse((await asgi_get(metrics_app(registry)))[1].decode())
    assert calls == list(range(5))
    for sub in subs:
        labels = {"topic": sub.pattern, "subscription": sub.name}
        assert value(samples, "tidings_event_latency_seconds_count", **labels) == 5
        assert value(samples, "tidings_events_total", status="success", **labels) == 5


def test_serve_metrics_answers_on_loopback() -> None:
    registry = CollectorRegistry()
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry)
        sub = bus.subscribe(Order, lambda order: None)
        for n in range(3):
            bus.publish(Order(n))
        server = serve_metrics(0, registry=registry)
        try:
            assert server.url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(server.url, timeout=TIMEOUT) as response:
                samples = parse(response.read().decode())
        finally:
            server.close()
    labels = {"topic": sub.pattern, "subscription": sub.name, "status": "success"}
    assert value(samples, "tidings_events_total", **labels) == 3


def test_label_cardinality_is_capped_and_folded_into_other() -> None:
    registry = CollectorRegistry()
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry, max_series=2, max_topics=2)
        for topic in ("g.a", "g.b", "g.c"):
            bus.subscribe(topic, lambda event: None)
        bus.subscribe("g.>", lambda event: None)
        for topic in ("g.a", "g.b", "g.c", "g.d", "g.e"):
            bus.publish({"x": 1}, topic=topic)
        samples = parse(registry_text(registry))
    series = {
        (dict(labels)["topic"], dict(labels)["subscription"])
        for (name, labels) in samples
        if name == "tidings_events_total"
    }
    assert len(series) == 3
    assert ("other", "other") in series
    other = {"topic": "other", "subscription": "other"}
    assert value(samples, "tidings_events_total", status="success", **other) == 6  # g.c + g.>
    topics = {
        dict(labels)["topic"]
        for (name, labels) in samples
        if name == "tidings_publish_duration_seconds_count"
    }
    # The first publish is always timed, so g.a takes a series; which of the others takes the
    # second depends on which publish is timed next (timed ones are folded first).
    assert len(topics) == 3
    assert {"g.a", "other"} <= topics
    assert value(samples, "tidings_publish_duration_seconds_count", topic="other") == 3


def test_label_slots_of_cancelled_subscriptions_are_freed() -> None:
    registry = CollectorRegistry()
    with tidings.Bus() as bus:
        metrics = Metrics(bus, registry=registry, max_series=2)
        bus.subscribe("churn.keep", lambda event: None)
        for round_ in range(50):
            sub = bus.subscribe(f"churn.t{round_}", lambda event: None)
            bus.publish({"x": 1}, topic=f"churn.t{round_}")
            samples = parse(registry_text(registry))
            assert (
                value(
                    samples,
                    "tidings_events_total",
                    status="success",
                    topic=f"churn.t{round_}",
                    subscription=sub.name,
                )
                == 1
            )
            sub.cancel()
        parse(registry_text(registry))  # the last one's slot is freed too
        assert [pattern for pattern, _ in metrics._labels] == ["churn.keep"]


def test_one_collector_per_registry_and_forget_restores_the_bus() -> None:
    registry = CollectorRegistry()
    with tidings.Bus() as bus, tidings.Bus() as other:
        metrics = Metrics(bus, registry=registry)
        with pytest.raises(ValueError, match="Duplicated"):
            Metrics(other, registry=registry)
        metrics.observe(other)
        assert type(bus) is not tidings.Bus  # observed: publish and emit are the hooks
        assert isinstance(bus, tidings.Bus)
        assert not {"publish", "emit"} & getattr(bus, "__dict__", {}).keys()  # not on the instance
        metrics.forget(bus)
        assert type(bus) is tidings.Bus
        port = observation_port(bus)
        assert port.observer is None
        bus.subscribe(Order, lambda order: None)
        bus.publish(Order(1))
        assert not any(s.observed for s in bus.subscriptions())
        assert port.route(Order, None).fast is not None  # the fast path is back


def test_summary_reads_like_a_report() -> None:
    with tidings.Bus() as bus:
        metrics = Metrics(bus, registry=False)

        def fails_on_odd(order: Order) -> None:
            if order.n % 2:
                raise ValueError("odd")

        bus.subscribe(Order, fails_on_odd)
        for n in range(4):
            bus.publish(Order(n))
        text = metrics.summary()
    assert "fails_on_odd (obs.order): success 2, failed 2, dead_lettered 2" in text
    assert "loss 50.0%" in text
    assert "; p50 <= " in text


def registry_text(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def duration_buckets(samples: dict[Any, float], topic: str) -> list[float]:
    """The cumulative bucket counts of ``topic``'s publish durations, lowest bound first."""
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "tidings_publish_duration_seconds_bucket" and ("topic", topic) in labels
    )
    return [v for _, v in buckets]


def test_dispatch_latencies_are_counted_exactly_across_threads() -> None:
    """Many dispatches (most of them untimed), from two threads: every one is counted once."""
    registry = CollectorRegistry()
    per_thread = 2_500  # many times SAMPLE_EVERY each
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry)
        sub = bus.subscribe(Order, lambda order: None)

        def publish() -> None:
            for n in range(per_thread):
                bus.publish(Order(n))

        threads = [threading.Thread(target=publish) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        samples = parse(registry_text(registry))
    labels = {"topic": sub.pattern, "subscription": sub.name}
    total = 2 * per_thread
    assert value(samples, "tidings_event_latency_seconds_count", **labels) == total
    assert value(samples, "tidings_event_latency_seconds_bucket", le="+Inf", **labels) == total
    assert value(samples, "tidings_publish_duration_seconds_count", topic="obs.order") == total
    assert value(samples, "tidings_events_total", status="success", **labels) == total


async def test_publish_durations_are_bucketed_consistently_per_topic() -> None:
    """Publishes on two topics, many untimed each, one of them re-entrant (queued behind
    the current dispatch), and emits: each topic's duration histogram counts every one once,
    its buckets are cumulative up to ``+Inf`` = ``_count``, and its sum is positive seconds."""
    registry = CollectorRegistry()
    publishes = 600  # many times SAMPLE_EVERY
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry)
        seen: list[str] = []

        def record(env: tidings.Envelope[Any]) -> None:
            seen.append(env.topic)
            if env.topic == "obs.order" and env.payload.n == 0:
                bus.publish(Order(-1), topic="obs.nested")  # from inside a handler

        bus.subscribe("obs.>", record, envelope=True)
        for n in range(publishes):
            bus.publish(Order(n))
            bus.publish(Order(n), topic="obs.other")
        for n in range(3):
            await bus.emit(Order(n), topic="obs.emitted")
        samples = parse(registry_text(registry))
    expected = {"obs.order": publishes, "obs.other": publishes, "obs.nested": 1, "obs.emitted": 3}
    assert collections.Counter(seen) == expected
    for topic, count in expected.items():
        assert value(samples, "tidings_publish_duration_seconds_count", topic=topic) == count
        counts = duration_buckets(samples, topic)
        assert counts == sorted(counts)
        assert counts[-1] == count
        total = value(samples, "tidings_publish_duration_seconds_sum", topic=topic)
        assert 1e-8 * count < total < 60 * count  # seconds: a publish takes over 10 ns


def test_dispatches_timed_now_and_then_are_counted_every_time() -> None:
    """A publish's dispatch is counted every time but timed only about one time in
    SAMPLE_EVERY: a topic published once, after another topic's first (timed) publish, still
    reports its one dispatch, in one bucket, with a positive sum; the other topic's thousand
    are counted exactly, in buckets that add up to them."""
    registry = CollectorRegistry()
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry)
        sub = bus.subscribe(Order, lambda order: None)
        bus.subscribe("obs.once", lambda event: None)
        for n in range(1000):
            bus.publish(Order(n))
            if n == 0:
                bus.publish({"n": n}, topic="obs.once")
        samples = parse(registry_text(registry))
    for topic, count in (("obs.order", 1000), ("obs.once", 1)):
        assert value(samples, "tidings_publish_duration_seconds_count", topic=topic) == count
        counts = duration_buckets(samples, topic)
        assert counts == sorted(counts)
        assert counts[-1] == count
        assert 0 < value(samples, "tidings_publish_duration_seconds_sum", topic=topic) < 60 * count
    labels = {"topic": sub.pattern, "subscription": sub.name}
    assert value(samples, "tidings_event_latency_seconds_count", **labels) == 1000
    assert value(samples, "tidings_event_latency_seconds_bucket", le="+Inf", **labels) == 1000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The test's clock, read by the hooks installed after this (``time.perf_counter``):
    ``clock[0]`` seconds, moved only by the test."""
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    return now


def test_time_every_one_times_every_publish_exactly(clock: list[float]) -> None:
    """With ``time_every=1`` each publish is timed: on a clock that the handler moves by
    62.5 ms for 3 events of 10 and by under 1 ms for the 7 others (binary fractions: exact
    sums), exactly 7 land at or below the 1 ms bound, 3 above 50 ms, and the sum is theirs
    (no real time is measured: the clock is the test's)."""
    registry = CollectorRegistry()
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry, time_every=1)

        def handle(order: Order) -> None:
            clock[0] += 2**-4 if order.n % 3 == 0 and order.n else 2**-10

        sub = bus.subscribe(Order, handle)
        for n in range(10):
            bus.publish(Order(n))
        samples = parse(registry_text(registry))
    labels = {"topic": sub.pattern, "subscription": sub.name}
    assert value(samples, "tidings_event_latency_seconds_bucket", le="0.05", **labels) == 7
    assert value(samples, "tidings_event_latency_seconds_bucket", le="0.001", **labels) == 7
    assert value(samples, "tidings_event_latency_seconds_bucket", le="+Inf", **labels) == 10
    assert (
        value(samples, "tidings_publish_duration_seconds_bucket", le="0.05", topic=sub.pattern) == 7
    )
    assert value(samples, "tidings_event_latency_seconds_sum", **labels) == pytest.approx(
        3 * 2**-4 + 7 * 2**-10
    )


def test_a_publish_from_a_handler_is_counted_and_its_queueing_is_not_its_latency(
    clock: list[float],
) -> None:
    """A publish from inside a handler is queued behind the current dispatch: it is counted
    in its topic's publish durations and in its inline handler's latency, and when timed,
    its time in ``publish`` (the queueing: 0 on the test's clock) is its publish duration,
    while its handler's latency takes the proportions of the publishes that dispatched."""
    registry = CollectorRegistry()
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry, time_every=1)

        def place(order: Order) -> None:
            clock[0] += 2**-9  # about 2 ms
            bus.publish(Order(-order.n), topic="obs.nested")

        def nested(event: Order) -> None:
            clock[0] += 2**-9

        bus.subscribe(Order, place)
        sub = bus.subscribe("obs.nested", nested)
        for n in range(3):
            bus.publish(Order(n))
        samples = parse(registry_text(registry))
    labels = {"topic": sub.pattern, "subscription": sub.name}
    assert value(samples, "tidings_publish_duration_seconds_count", topic="obs.nested") == 3
    assert (
        value(samples, "tidings_publish_duration_seconds_bucket", le="1e-06", topic="obs.nested")
        == 3
    )
    assert value(samples, "tidings_publish_duration_seconds_count", topic="obs.order") == 3
    assert value(samples, "tidings_event_latency_seconds_count", **labels) == 3
    assert value(samples, "tidings_event_latency_seconds_bucket", le="0.0025", **labels) == 0
    assert value(samples, "tidings_event_latency_seconds_bucket", le="0.005", **labels) == 3


@pytest.mark.parametrize("time_every", [1, 64])
def test_an_observed_bus_refuses_options_by_position(time_every: int) -> None:
    """An observed bus's ``publish`` is Bus.publish (its publisher carries the observer's
    tests), which refuses a topic (or key, or headers) passed by position."""
    with tidings.Bus() as bus:
        plain = inspect.signature(bus.publish)
        Metrics(bus, registry=CollectorRegistry(), time_every=time_every)
        calls: list[int] = []
        bus.subscribe("obs.>", lambda event: calls.append(1))
        assert type(bus) is not tidings.Bus
        assert inspect.signature(bus.publish) == plain
        with pytest.raises(TypeError, match="positional"):
            bus.publish(Order(1), "obs.elsewhere")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="positional"):
            bus.publish(Order(1), None, "obs.elsewhere")  # type: ignore[call-arg]
        bus.publish(event=Order(2), topic="obs.named", key="k", headers={"h": "v"})
    assert calls == [1]


def test_time_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_every"):
        Metrics(registry=False, time_every=0)


@settings(max_examples=40, deadline=None)
@given(
    topics=st.lists(st.integers(0, 3), max_size=400),
    time_every=st.sampled_from([1, 2, 7, 64]),
)
def test_counts_are_exact_however_dispatches_are_timed(topics: list[int], time_every: int) -> None:
    """Any sequence of publishes over a few topics, any timing rate: each topic's publish
    durations and its subscription's latencies count its publishes exactly, in buckets that
    rise to that count."""
    registry = CollectorRegistry()
    with tidings.Bus() as bus:
        Metrics(bus, registry=registry, time_every=time_every)
        subs = [bus.subscribe(f"obs.t{i}", lambda event: None) for i in range(4)]
        for i in topics:
            bus.publish({"i": i}, topic=f"obs.t{i}")
        samples = parse(registry_text(registry))
    for i, sub in enumerate(subs):
        published = topics.count(i)
        if not published:
            continue
        counts = duration_buckets(samples, sub.pattern)
        assert counts == sorted(counts)
        assert counts[-1] == published
        labels = {"topic": sub.pattern, "subscription": sub.name}
        assert value(samples, "tidings_event_latency_seconds_count", **labels) == published
        assert value(samples, "tidings_publish_duration_seconds_sum", topic=sub.pattern) > 0


@pytest.mark.parametrize("hooks", ["metrics", "tracing", "both"])
def test_an_observed_publish_refuses_options_by_position_and_counts_what_it_published(
    hooks: str, spans: Spans
) -> None:
    # The hooks take Bus.publish's options positionally for speed, but must refuse them as
    # Bus.publish does; a refused call publishes (and counts) nothing.
    registry = CollectorRegistry()
    bus = tidings.Bus()
    if hooks in ("metrics", "both"):
        Metrics(bus, registry=registry, time_every=1)
    if hooks in ("tracing", "both"):
        Tracing(bus, tracer_provider=spans.provider)
    seen: list[Order] = []
    bus.subscribe("orders", seen.append)
    with pytest.raises(TypeError):
        bus.publish(Order(1), "orders")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        bus.publish(Order(2), None, topic="orders")  # type: ignore[misc]
    bus.publish(Order(3), topic="orders")
    assert seen == [Order(3)]
    if hooks != "tracing":
        samples = parse(registry_text(registry))
        assert value(samples, "tidings_publish_duration_seconds_count", topic="orders") == 1


def test_a_handler_that_forgets_the_bus_gets_its_event_once() -> None:
    """A handler that takes metrics off the bus while the observed publisher's hook
    publishes its event (a route off the hot path: a queued subscription) gets it once: the
    bus does not dispatch it again once its own publisher is back."""
    with tidings.Bus() as bus:
        metrics = Metrics(bus, registry=False)
        calls: list[int] = []

        def forgets(order: Order) -> None:
            calls.append(order.n)
            metrics.forget(bus)

        bus.subscribe(Order, forgets)
        bus.subscribe(Order, lambda order: None, mode="queued")
        bus.publish(Order(1))
        bus.publish(Order(2))
    assert calls == [1, 2]


def test_an_event_published_as_metrics_are_installed_is_delivered() -> None:
    """Metrics installed (as by another thread) while an unobserved bus stamps an event for
    a route off the hot path (a queued subscription): the bus still dispatches it, once."""
    install: list[tidings.Bus] = []

    def wall() -> int:
        if install:
            Metrics(install.pop(), registry=False)  # the bus is observed from this instant
        return time.time_ns()

    with tidings.Bus(clock=tidings.HybridClock(wall=wall)) as bus:
        calls: list[int] = []
        bus.subscribe(Order, lambda order: calls.append(order.n))
        bus.subscribe(Order, lambda order: None, mode="queued")
        install.append(bus)
        bus.publish(Order(1))
        assert not install
        bus.publish(Order(2))
    assert calls == [1, 2]
