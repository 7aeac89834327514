"""R1 under callgrind: instructions per first publish to a new topic, as ``bench_routing``
measures it (10,000 mixed subscriptions, new topics from a fresh bus, garbage collection on).

``python _callgrind_routing.py N`` subscribes as R1 does, then publishes to N new topics
inside one ``functools.reduce`` call and N times to one cached topic inside another, so
that callgrind, collecting only inside ``functools_reduce`` and dumping after each call,
writes one profile per phase::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        --dump-after=functools_reduce --callgrind-out-file=cg.out \\
        python benchmarks/_callgrind_routing.py 20000

Instructions per first publish: the ``totals:`` of ``cg.out.1`` divided by N (``cg.out.2``:
per cached publish, for comparison).
"""

from __future__ import annotations

import functools
import gc
import sys

import tidings
from bench_routing import SUBSCRIPTIONS, Reading, subscribe_mix


def main(n: int) -> None:
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


if __name__ == "__main__":
    main(int(sys.argv[1]))
