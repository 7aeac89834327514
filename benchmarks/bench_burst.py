"""S7: a burst ten times faster than the consumer, for a few seconds, per overflow policy.

A queued subscription whose handler manages ``CONSUMER_RATE`` events/s receives events
published at ten times that rate. Under ``block`` the publisher is slowed to the consumer's
pace and nothing is lost; under the drop policies the publisher keeps its pace and every
discarded event is counted. Every run checks ``handled + dropped == published`` exactly and
reports the buffer's high-water mark and the traced memory peak, which stay bounded by
``maxsize`` however long the burst lasts.

Peers: pyee, blinker, PyPubSub and bubus have no bounded buffer with an overflow policy
(their handlers run inline, or bubus queues without a drop policy), so only tidings runs it.
"""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass

import tidings
from _harness import DeliveryMismatchError, Row

__all__ = ("run",)

CONSUMER_RATE = 2_000
MAXSIZE = 1_000


@tidings.event("bench.burst")
@dataclass(frozen=True, slots=True)
class Burst:
    n: int


def _burst(overflow: tidings.Overflow, seconds: float) -> Row:
    handled = [0]
    pause = 1 / CONSUMER_RATE

    def slow(event: Burst) -> None:
        handled[0] += 1
        time.sleep(pause)

    bus = tidings.Bus()
    sub = bus.subscribe(Burst, slow, mode="queued", maxsize=MAXSIZE, overflow=overflow)
    interval = 1 / (10 * CONSUMER_RATE)
    tracemalloc.start()
    start = time.perf_counter()
    published = 0
    # One publish per pass, so the deadline holds even while ``block`` stalls the publisher.
    while (now := time.perf_counter()) - start < seconds:
        if published < (now - start) / interval:
            bus.publish(Burst(published))
            published += 1
        else:
            time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    stats = sub.statistics()
    bus.close()
    assert sub.queued is not None
    if not sub.queued.wait_handled(timeout=60):
        raise DeliveryMismatchError(f"S7/{overflow}: the consumer did not drain in time")
    dropped = sub.statistics().dropped
    if handled[0] + dropped != published or (overflow == "block" and dropped):
        raise DeliveryMismatchError(
            f"S7/{overflow}: published {published}, handled {handled[0]}, dropped {dropped}"
        )
    return Row(
        "S7",
        "tidings",
        "published/s",
        published / elapsed,
        "/s",
        f"overflow={overflow}",
        {
            "published": published,
            "handled": handled[0],
            "dropped": dropped,
            "high-water": stats.high_water,
            "peak MiB": peak / 2**20,
        },
    )


def run(quick: bool = False) -> list[Row]:
    """S7 rows, one per overflow policy."""
    seconds = 0.5 if quick else 5.0
    return [_burst(policy, seconds) for policy in ("block", "drop_oldest", "drop_newest")]
