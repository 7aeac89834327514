"""In-process publish/subscribe benchmarks S1-S4 and S6, side by side with peers.

Every scenario counts handler calls and raises :class:`DeliveryMismatchError` if one is missing.
Peers: a raw loop (the floor: the same handler functions called directly), pyee, blinker,
PyPubSub and bubus.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blinker
import bubus
import pyee
import pyee.asyncio
from pubsub import pub

import tidings
from _harness import Row, check, timed

__all__ = ("run",)

HANDLERS = 10
BUBUS_CHUNK = 50  # bubus refuses to queue more than 100 pending events
SLOW_PEERS = frozenset({"blinker", "PyPubSub"})
"""Timed once, not best of 3: several times slower than tidings, their noise moves no ratio
that matters, and it keeps ``make bench`` within its time budget."""
BUBUS_SUBSCRIPTIONS = 1_000
"""S6 for bubus: its ``on`` is quadratic in the handlers already registered (10,000 take
about a minute), so it subscribes this many."""


@tidings.event("bench.tick")
@dataclass(frozen=True, slots=True)
class Tick:
    n: int


class BubusTick(bubus.BaseEvent[None]):
    n: int = 0


def _handlers(hits: list[int], count: int = HANDLERS) -> list[Callable[[Any], None]]:
    def make(i: int) -> Callable[[Any], None]:
        def handler(e: Any) -> None:
            hits[0] += 1

        handler.__name__ = handler.__qualname__ = f"handler{i}"  # bubus keys handlers by name
        return handler

    return [make(i) for i in range(count)]


def _async_handlers(hits: list[int], count: int = HANDLERS) -> list[Callable[[Any], Any]]:
    def make(i: int) -> Callable[[Any], Any]:
        async def handler(e: Any) -> None:
            hits[0] += 1

        handler.__name__ = handler.__qualname__ = f"handler{i}"
        return handler

    return [make(i) for i in range(count)]


# ----------------------------------------------------------------------------- publishers
# Each factory wires HANDLERS handlers per topic and returns publish(topic_index, event).

Publisher = Callable[[int, Any], object]


def _raw(topics: int, hits: list[int]) -> Publisher:
    tables = [_handlers(hits) for _ in range(topics)]

    def publish(topic: int, event: Any) -> None:
        for handler in tables[topic]:
            handler(event)

    return publish


def _tidings(topics: int, hits: list[int]) -> Publisher:
    bus = tidings.Bus()
    names = [f"bench.t{i}" for i in range(topics)]
    for name in names:
        for handler in _handlers(hits):
            bus.subscribe(name, handler)
    publish_ = bus.publish
    if topics == 1:
        bus2 = tidings.Bus()
        for handler in _handlers(hits):
            bus2.subscribe(Tick, handler)
        typed = bus2.publish
        return lambda topic, event: typed(event)
    return lambda topic, event: publish_(event, topic=names[topic])


def _pyee(topics: int, hits: list[int]) -> Publisher:
    emitter = pyee.EventEmitter()
    for i in range(topics):
        for handler in _handlers(hits):
            emitter.on(f"t{i}", handler)
    names = [f"t{i}" for i in range(topics)]
    emit = emitter.emit
    return lambda topic, event: emit(names[topic], event)


def _blinker(topics: int, hits: list[int]) -> Publisher:
    signals = [blinker.Signal() for _ in range(topics)]
    keep = []
    for signal in signals:
        for handler in _handlers(hits):
            keep.append(handler)
            signal.connect(handler, weak=False)
    sends = [s.send for s in signals]
    return lambda topic, event: sends[topic](event)


def _pypubsub(topics: int, hits: list[int]) -> Publisher:
    pub.unsubAll()
    keep: list[Any] = []
    names = [f"bench{i}" for i in range(topics)]
    for name in names:
        for handler in _handlers(hits):
            keep.append(handler)
            pub.subscribe(handler, name)
    send = pub.sendMessage

    def publish(topic: int, event: Any) -> None:
        send(names[topic], e=event)

    publish.keep = keep  # type: ignore[attr-defined]
    return publish


SYNC_PEERS: dict[str, Callable[[int, list[int]], Publisher]] = {
    "raw loop": _raw,
    "tidings": _tidings,
    "pyee": _pyee,
    "blinker": _blinker,
    "PyPubSub": _pypubsub,
}


def _bubus_throughput(topics: int, count: int) -> tuple[float, int]:
    async def main() -> tuple[float, int]:
        hits = [0]
        bus = bubus.EventBus(max_history_size=50)
        classes = [type(f"BubusTick{i}", (BubusTick,), {}) for i in range(topics)]
        for cls in classes:
            for handler in _handlers(hits):
                bus.on(cls, handler)
        start = time.perf_counter()
        for i in range(count):
            bus.dispatch(classes[i % topics](n=i))
            if i % BUBUS_CHUNK == BUBUS_CHUNK - 1:
                await bus.wait_until_idle(timeout=120)
        await bus.wait_until_idle(timeout=120)
        elapsed = time.perf_counter() - start
        await bus.stop(clear=True)
        return elapsed, hits[0]

    return asyncio.run(main())


# ----------------------------------------------------------------------------- scenarios


def _throughput(scenario: str, topics: int, count: int, bubus_count: int) -> list[Row]:
    rows: list[Row] = []
    ticks = [Tick(i) for i in range(count)]
    for library, factory in SYNC_PEERS.items():
        hits = [0]
        publish = factory(topics, hits)

        def run(publish: Publisher = publish) -> None:
            for i, tick in enumerate(ticks):
                publish(i % topics, tick)

        repeat = 1 if library in SLOW_PEERS else 3
        seconds = timed(run, repeat)
        check(scenario, library, hits[0], repeat * count * HANDLERS)
        rows.append(_rate_row(scenario, library, count, seconds))
    seconds, delivered = _bubus_throughput(topics, bubus_count)
    check(scenario, "bubus", delivered, bubus_count * HANDLERS)
    rows.append(_rate_row(scenario, "bubus", bubus_count, seconds, f"{bubus_count:,} events"))
    return rows


def _rate_row(scenario: str, library: str, count: int, seconds: float, note: str = "") -> Row:
    return Row(
        scenario,
        library,
        "publishes/s",
        count / seconds,
        "/s",
        note,
        {"deliveries/s": count * HANDLERS / seconds},
    )


def s1(count: int) -> list[Row]:
    """S1: 1 topic x 10 sync subscribers."""
    return _throughput("S1", 1, count, max(50, count // 2000))


def s2(count: int) -> list[Row]:
    """S2: 5 topics x 10 subscribers each, round-robin publishes."""
    return _throughput("S2", 5, count, max(50, count // 2000))


def s3(samples: int) -> list[Row]:
    """S3: per-publish latency, p50 and p99 (perf_counter_ns), 1 topic x 10 subscribers."""
    rows = []
    tick = Tick(0)
    clock = time.perf_counter_ns
    for library, factory in SYNC_PEERS.items():
        hits = [0]
        publish = factory(1, hits)
        for _ in range(2_000):
            publish(0, tick)
        latencies = []
        for _ in range(samples):
            start = clock()
            publish(0, tick)
            latencies.append(clock() - start)
        check("S3", library, hits[0], (2_000 + samples) * HANDLERS)
        cuts = statistics.quantiles(latencies, n=100)
        rows.append(
            Row("S3", library, "p99 µs", cuts[98] / 1000, "µs", extra={"p50 µs": cuts[49] / 1000})
        )
    return rows


def s4(count: int) -> list[Row]:
    """S4: 10 async subscribers, every handler awaited."""
    rows = []

    async def raw_floor() -> tuple[float, int]:
        hits = [0]
        handlers = _async_handlers(hits)
        start = time.perf_counter()
        for i in range(count):
            tick = Tick(i)
            for handler in handlers:
                await handler(tick)
        return time.perf_counter() - start, hits[0]

    async def with_tidings() -> tuple[float, int]:
        hits = [0]
        async with tidings.Bus() as bus:
            for handler in _async_handlers(hits):
                bus.subscribe(Tick, handler)
            publish = bus.publish
            start = time.perf_counter()
            for i in range(count):
                publish(Tick(i))
            report = await bus.aclose()
            elapsed = time.perf_counter() - start
        assert report.clean
        return elapsed, hits[0]

    async def with_tidings_emit() -> tuple[float, int]:
        hits = [0]
        async with tidings.Bus() as bus:
            for handler in _async_handlers(hits):
                bus.subscribe(Tick, handler)
            emit = bus.emit
            start = time.perf_counter()
            for i in range(count):
                await emit(Tick(i))
            elapsed = time.perf_counter() - start
        return elapsed, hits[0]

    small = max(1, count // 10)

    async def with_pyee() -> tuple[float, int]:
        hits = [0]
        target = small * HANDLERS
        finished = asyncio.Event()

        def make() -> Callable[[Any], Any]:
            async def handler(e: Any) -> None:
                hits[0] += 1
                if hits[0] == target:
                    finished.set()

            return handler

        emitter = pyee.asyncio.AsyncIOEventEmitter()
        for _ in range(HANDLERS):
            emitter.on("t", make())
        start = time.perf_counter()
        for i in range(small):
            emitter.emit("t", Tick(i))
        await asyncio.wait_for(finished.wait(), timeout=120)
        return time.perf_counter() - start, hits[0]

    async def with_blinker() -> tuple[float, int]:
        hits = [0]
        signal = blinker.Signal()
        handlers = _async_handlers(hits)
        for handler in handlers:
            signal.connect(handler, weak=False)
        start = time.perf_counter()
        for i in range(count):
            await signal.send_async(Tick(i))
        return time.perf_counter() - start, hits[0]

    async def with_bubus() -> tuple[float, int]:
        hits = [0]
        bus = bubus.EventBus(max_history_size=50)
        for handler in _async_handlers(hits):
            bus.on(BubusTick, handler)
        tiny = max(50, count // 1000)
        start = time.perf_counter()
        for i in range(tiny):
            bus.dispatch(BubusTick(n=i))
            if i % BUBUS_CHUNK == BUBUS_CHUNK - 1:
                await bus.wait_until_idle(timeout=120)
        await bus.wait_until_idle(timeout=120)
        elapsed = time.perf_counter() - start
        await bus.stop(clear=True)
        return elapsed, hits[0]

    cases: list[tuple[str, Callable[[], Any], int, str]] = [
        ("raw loop", raw_floor, count, "await each handler in turn"),
        ("tidings", with_tidings, count, "publish(); eager async handlers"),
        ("tidings emit", with_tidings_emit, count, "await emit() per event"),
        ("pyee", with_pyee, small, f"AsyncIOEventEmitter, {small:,} events"),
        ("blinker", with_blinker, count, "await send_async()"),
        ("bubus", with_bubus, max(50, count // 1000), f"{max(50, count // 1000):,} events"),
    ]
    for library, case, events, note in cases:
        seconds, hits = asyncio.run(case())
        check("S4", library, hits, events * HANDLERS)
        rows.append(Row("S4", library, "events/s", events / seconds, "/s", note))
    return rows


def s6(count: int) -> list[Row]:
    """S6: bytes per subscription (tracemalloc), handlers allocated beforehand."""
    rows = []

    def measure(library: str, subscribe: Callable[[list[Callable[[Any], None]]], object]) -> None:
        subscriptions = min(count, BUBUS_SUBSCRIPTIONS) if library == "bubus" else count
        handlers = _handlers([0], subscriptions)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        keep = subscribe(handlers)
        gc.collect()  # count what subscribing keeps, not garbage awaiting collection
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        note = f"{subscriptions:,} subscriptions" if subscriptions != count else ""
        per = (after - before) / subscriptions
        rows.append(Row("S6", library, "bytes/subscription", per, "B", note))
        del keep

    def with_tidings(handlers: list[Callable[[Any], None]]) -> object:
        bus = tidings.Bus()
        for handler in handlers:
            bus.subscribe(Tick, handler)
        return bus

    def with_pyee(handlers: list[Callable[[Any], None]]) -> object:
        emitter = pyee.EventEmitter()
        for handler in handlers:
            emitter.on("t", handler)
        return emitter

    def with_blinker(handlers: list[Callable[[Any], None]]) -> object:
        signal = blinker.Signal()
        for handler in handlers:
            signal.connect(handler, weak=False)
        return signal

    def with_pypubsub(handlers: list[Callable[[Any], None]]) -> object:
        pub.unsubAll()
        for handler in handlers:
            pub.subscribe(handler, "bench_s6")
        return handlers

    def with_bubus(handlers: list[Callable[[Any], None]]) -> object:
        bus = bubus.EventBus()
        for handler in handlers:
            bus.on(BubusTick, handler)
        return bus

    for library, subscribe in [
        ("tidings", with_tidings),
        ("pyee", with_pyee),
        ("blinker", with_blinker),
        ("PyPubSub", with_pypubsub),
        ("bubus", with_bubus),
    ]:
        measure(library, subscribe)
    return rows


def run(quick: bool = False) -> list[Row]:
    """All in-process scenarios; ``quick`` shrinks them for a smoke run."""
    scale = 10 if quick else 1
    return [
        *s1(200_000 // scale),
        *s2(200_000 // scale),
        *s3(20_000 // scale),
        *s4(100_000 // scale),
        *s6(10_000 // scale),
    ]
