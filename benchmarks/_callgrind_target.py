"""One S1 bus per observability variant; run as a script, it publishes N times.

``python _callgrind_target.py VARIANT N``: builds the variant's bus (10 sync subscribers on
one typed topic) and publishes N events inside a function, so that the instruction count of
a run with N=0 (set-up alone) can be subtracted from one with N > 0 (callgrind).
``python _callgrind_target.py VARIANT N --time`` prints the seconds the N publishes took
instead (garbage collection off), for wall-clock runs in a fresh process each.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tidings

VARIANTS = (
    "tidings",
    "+ metrics",
    "+ tracing, not sampling",
    "+ tracing, no SDK",
    "+ metrics + tracing",
    "+ tracing, sampling all",
)


@tidings.event("bench.obs")
@dataclass(frozen=True, slots=True)
class Tick:
    n: int


def build(variant: str, hits: list[int]) -> tuple[Callable[[Tick], Any], Tick]:
    """The ``publish`` of a bus observed as ``variant`` says, and a Tick to publish."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
    from prometheus_client import CollectorRegistry

    from tidings.observability import Metrics, Tracing

    bus = tidings.Bus()
    for _ in range(10):

        def handler(event: Tick) -> None:
            hits[0] += 1

        bus.subscribe(Tick, handler)
    if "metrics" in variant:
        Metrics(bus, registry=CollectorRegistry())
    if "sampling all" in variant:
        Tracing(bus, tracer_provider=TracerProvider(sampler=ALWAYS_ON))
    elif "no SDK" in variant:
        Tracing(bus)
    elif "tracing" in variant:
        Tracing(bus, tracer_provider=TracerProvider(sampler=ParentBased(ALWAYS_OFF)))
    return bus.publish, Tick(1)


def main(variant: str, n: int, timed: bool = False) -> None:
    hits = [0]
    publish, tick = build(variant, hits)
    gc.disable()
    start = time.perf_counter()
    for _ in range(n):
        publish(tick)
    elapsed = time.perf_counter() - start
    assert hits[0] == 10 * n
    if timed:
        print(elapsed)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--time" in sys.argv[3:])
