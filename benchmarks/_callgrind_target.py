"""One S1 bus per observability variant; run as a script, it publishes N times.

``python _callgrind_target.py VARIANT N``: builds the variant's bus (10 sync subscribers on
one typed topic), publishes N events and prints the seconds they took (garbage collection
off), for wall-clock runs in a fresh process each.

``python _callgrind_target.py --callgrind N`` builds every variant in turn in one process
and drives each one's N publishes through one ``functools.reduce`` call, so that callgrind,
collecting only inside ``functools_reduce`` and dumping after each call
(``--collect-atstart=no --toggle-collect=functools_reduce --dump-after=functools_reduce``),
writes one profile per variant holding exactly its publishes and the loop driving them.

``python _callgrind_target.py --interleaved N ROUNDS`` builds every variant but
``+ tracing, sampling all`` in one process, then runs N publishes of each in turn, ROUNDS
times (the order reversed every other round), and prints as JSON each variant's CPU seconds
per publish (``time.process_time``) in each round: an A/B that a loaded machine disturbs
alike for every variant of a round.
"""

from __future__ import annotations

import functools
import gc
import json
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


def timed(variant: str, n: int) -> float:
    """Seconds that N publishes on ``variant``'s bus take."""
    hits = [0]
    publish, tick = build(variant, hits)
    gc.disable()
    start = time.perf_counter()
    for _ in range(n):
        publish(tick)
    elapsed = time.perf_counter() - start
    assert hits[0] == 10 * n
    return elapsed


def counted(counts: dict[str, int]) -> None:
    """Every variant's publishes, each variant's inside one ``functools.reduce`` call."""
    gc.disable()
    for variant, n in counts.items():
        hits = [0]
        publish, tick = build(variant, hits)
        functools.reduce(lambda _, __: publish(tick), range(n), None)
        assert hits[0] == 10 * n, (variant, hits[0])


def interleaved(variants: tuple[str, ...], n: int, rounds: int) -> dict[str, list[float]]:
    """CPU seconds per publish of each variant in each round, every variant built in this
    process and run in turn, the order reversed every other round."""
    hits = {variant: [0] for variant in variants}
    built = {variant: build(variant, hits[variant]) for variant in variants}
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    gc.disable()
    for r in range(rounds):
        for variant in variants if r % 2 else variants[::-1]:
            publish, tick = built[variant]
            start = time.process_time()
            for _ in range(n):
                publish(tick)
            times[variant].append((time.process_time() - start) / n)
    for variant in variants:
        assert hits[variant][0] == 10 * n * rounds, (variant, hits[variant][0])
    return times


if __name__ == "__main__":
    if sys.argv[1] == "--interleaved":
        variants = tuple(v for v in VARIANTS if "sampling all" not in v)
        print(json.dumps(interleaved(variants, int(sys.argv[2]), int(sys.argv[3]))))
    elif sys.argv[1] == "--callgrind":
        counted({variant: int(n) for variant, n in zip(VARIANTS, sys.argv[2:], strict=True)})
    else:
        print(timed(sys.argv[1], int(sys.argv[2])))
