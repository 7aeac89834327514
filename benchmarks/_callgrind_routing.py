"""R1 and R4 under callgrind: instructions per first publish to a new topic, and per
subscribe and cancel at 100,000 subscriptions on as many topics, as ``bench_routing``
measures them.

``python _callgrind_routing.py N`` subscribes as R1 does (10,000 mixed subscriptions, new
topics from a fresh bus, garbage collection on), then publishes to N new topics inside one
``functools.reduce`` call and N times to one cached topic inside another, so that callgrind,
collecting only inside ``functools_reduce`` and dumping after each call, writes one profile
per phase::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        --dump-after=functools_reduce --callgrind-out-file=cg.out \\
        python benchmarks/_callgrind_routing.py 20000

Instructions per first publish: the ``totals:`` of ``cg.out.1`` divided by N (``cg.out.2``:
per cached publish, for comparison).

``python _callgrind_routing.py N subscribe`` (N at most 100,000) fills a bus as R4 does
(100,000 - N subscriptions, one per topic, the probed topics' routes cached, garbage
collection off), then makes N subscriptions inside one ``functools.reduce`` call and cancels
them inside another: ``cg.out.1`` / N per subscribe, ``cg.out.2`` / N per cancel.
"""

from __future__ import annotations

import functools
import gc
import sys

import tidings
from bench_routing import SUBSCRIPTIONS, Reading, subscribe_mix

R4_TOTAL = 100_000


def first_publish(n: int) -> None:
    hits = [0]

    def handler(event: object) -> None:
        hits[0] += 1

    bus = tidings.Bus()
    subscribe_mix(bus, SUBSCRIPTIONS, handler)
    reading = Reading(0)
    sites = [i for i in range(SUBSCRIPTIONS) if i % 4 in (1, 2)]
    topics = [f"site{sites[k % len(sites)]}.d{k}.telemetry" for k in range(n)]
    publish = bus.publish
    gc.collect()
    functools.reduce(lambda _, topic: publish(reading, topic=topic), topics, None)
    cached = topics[-1]
    functools.reduce(lambda _, __: publish(reading, topic=cached), range(n), None)
    assert hits[0] == 2 * n, hits


def subscribe_cancel(n: int) -> None:
    bus = tidings.Bus()
    reading = Reading(0)

    def handler(event: object) -> None:
        pass

    for i in range(R4_TOTAL - n):
        bus.subscribe(f"bench.t{i}.x", handler)
    topics = [f"bench.t{i}.x" for i in range(R4_TOTAL - n, R4_TOTAL)]
    for topic in topics:
        bus.publish(reading, topic=topic)
    subs: list[tidings.Subscription[object]] = []
    gc.collect()
    gc.disable()
    functools.reduce(lambda _, topic: subs.append(bus.subscribe(topic, handler)), topics, None)
    functools.reduce(lambda _, sub: sub.cancel(), subs, None)
    gc.enable()
    assert len(bus.subscriptions()) == R4_TOTAL - n


if __name__ == "__main__":
    if sys.argv[2:] == ["subscribe"]:
        subscribe_cancel(int(sys.argv[1]))
    else:
        first_publish(int(sys.argv[1]))
