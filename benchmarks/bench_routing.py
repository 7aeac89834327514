"""Routing at scale (R1-R4): what a new topic, many topics and many subscriptions cost.

- R1: the first publish to a topic the bus has not seen, with 10,000 subscriptions (a mix
  of literal, ``*`` and ``>`` patterns and class subscriptions); µs per publish.
- R2: memory: RSS growth of a fresh process publishing to 1,000,000 distinct topics (one
  per device, as an IoT gateway does), read from ``/proc/self/statm``; MB.
- R3: ``subscribe`` and ``cancel`` with 100,000 subscriptions on one topic; µs each.
- R4: ``subscribe`` and ``cancel`` with 100,000 subscriptions on 100,000 topics; µs each.

Every scenario counts handler calls (or subscriptions) and fails on a mismatch. Run alone
with ``python benchmarks/bench_routing.py [--quick]``; with ``PYTHONPATH=<other checkout>/src``
it measures that checkout's tidings instead.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import Any

import tidings
from _harness import Row, check

__all__ = ("run", "subscribe_mix")

SUBSCRIPTIONS = 10_000
R1_BUDGET = 3.0
"""Seconds R1 may spend on first publishes (a slow router gets fewer samples)."""


@tidings.event("bench.route")
@dataclass(frozen=True, slots=True)
class Reading:
    n: int


def subscribe_mix(bus: tidings.Bus, count: int, handler: Any) -> None:
    """``count`` subscriptions: literal, ``*``, ``>`` and class ones, over many prefixes."""
    for i in range(count):
        kind = i % 4
        if kind == 0:
            bus.subscribe(f"site{i}.dev.telemetry", handler)
        elif kind == 1:
            bus.subscribe(f"site{i}.*.telemetry", handler)
        elif kind == 2:
            bus.subscribe(f"site{i}.>", handler)
        else:
            bus.subscribe(Reading, handler, priority=i % 3)


def r1(samples: int) -> list[Row]:
    """R1: first publish to a new topic with 10,000 subscriptions."""
    hits = [0]

    def handler(event: object) -> None:
        hits[0] += 1

    bus = tidings.Bus()
    subscribe_mix(bus, SUBSCRIPTIONS, handler)
    reading = Reading(0)
    # Topic i matches the '*' and '>' subscriptions of its site: 1 or 2 handlers each.
    sites = [i for i in range(SUBSCRIPTIONS) if i % 4 in (1, 2)]
    expected = 0
    published = 0
    gc.collect()
    deadline = time.perf_counter() + R1_BUDGET
    elapsed = 0.0
    while published < samples and time.perf_counter() < deadline:
        site = sites[published % len(sites)]
        topic = f"site{site}.d{published}.telemetry"
        start = time.perf_counter()
        bus.publish(reading, topic=topic)
        elapsed += time.perf_counter() - start
        expected += 1
        published += 1
    check("R1", "tidings", hits[0], expected)
    return [
        Row(
            "R1",
            "tidings",
            "first publish to a new topic",
            elapsed / published * 1e6,
            "µs",
            f"{SUBSCRIPTIONS:,} subscriptions, {published:,} new topics",
        )
    ]


_R2_CHILD = textwrap.dedent(
    """
    import gc, os, sys
    from dataclasses import dataclass
    import tidings

    @tidings.event("bench.memory")
    @dataclass(frozen=True, slots=True)
    class Reading:
        n: int

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    hits = [0]
    def handler(event):
        hits[0] += 1

    bus = tidings.Bus()
    bus.subscribe("dev.*.telemetry", handler)
    bus.subscribe("dev.>", handler)
    bus.subscribe("dev.d1.telemetry", handler)
    count = int(sys.argv[1])
    reading = Reading(0)
    for i in range(10_000):  # warm up: allocator arenas, caches at their steady size
        bus.publish(reading, topic=f"warm.d{i}.telemetry")
    gc.collect()
    before = rss()
    for i in range(count):
        bus.publish(reading, topic=f"dev.d{i}.telemetry")
    gc.collect()
    print(rss() - before, hits[0])
    """
)


def r2(count: int) -> list[Row]:
    """R2: RSS growth publishing to ``count`` distinct topics, in a fresh process."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _R2_CHILD, str(count)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout.split()
    took = time.perf_counter() - started
    grown, hits = int(out[0]), int(out[1])
    check("R2", "tidings", hits, 2 * count + 1)
    return [
        Row(
            "R2",
            "tidings",
            "RSS growth",
            grown / 2**20,
            "MB",
            f"{count:,} distinct topics, {took:.0f} s",
        )
    ]


def _subscribe_cancel(scenario: str, total: int, topic_of: Any) -> list[Row]:
    """Fill a bus with ``total - probe`` subscriptions, then time ``probe`` subscribes and
    ``probe`` cancels at that size (with the topics' routes cached, as a live bus has)."""
    probe = min(1000, total // 10)
    bus = tidings.Bus()
    reading = Reading(0)

    def handler(event: object) -> None:
        pass

    for i in range(total - probe):
        bus.subscribe(topic_of(i), handler)
    for topic in {topic_of(i) for i in range(total - probe, total)}:
        bus.publish(reading, topic=topic)  # a cached route for each probed topic
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        subs = [bus.subscribe(topic_of(i), handler) for i in range(total - probe, total)]
        subscribed = time.perf_counter() - start
        check(scenario, "tidings", len(bus.subscriptions()), total)
        start = time.perf_counter()
        for sub in subs:
            sub.cancel()
        cancelled = time.perf_counter() - start
    finally:
        gc.enable()
    check(scenario, "tidings", len(bus.subscriptions()), total - probe)
    note = f"at {total:,} subscriptions"
    return [
        Row(scenario, "tidings", "subscribe", subscribed / probe * 1e6, "µs", note),
        Row(scenario, "tidings", "cancel", cancelled / probe * 1e6, "µs", note),
    ]


def r3(total: int) -> list[Row]:
    """R3: subscribe and cancel with ``total`` subscriptions on one topic."""
    return _subscribe_cancel("R3", total, lambda i: "bench.one.topic")


def r4(total: int) -> list[Row]:
    """R4: subscribe and cancel with ``total`` subscriptions on as many topics."""
    return _subscribe_cancel("R4", total, lambda i: f"bench.t{i}.x")


def run(quick: bool = False) -> list[Row]:
    """All routing scenarios; ``quick`` shrinks them for a smoke run."""
    scale = 10 if quick else 1
    return [
        *r1(20_000 // scale),
        *r2(1_000_000 // scale),
        *r3(100_000 // scale),
        *r4(100_000 // scale),
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.scenario} {row.metric}: {row.value:,.2f} {row.unit} ({row.note})")
