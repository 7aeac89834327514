"""Live per-route and per-target delivery statistics of a gateway (what the console shows).

:class:`RouteStats` is fed once per finished :class:`~tidings.gateway.table.Dispatch` by the
runner (:meth:`RouteStats.record`) and read by the console (:meth:`RouteStats.snapshot`).

Invariants:

- Memory is bounded: per route, :data:`WINDOW` one-second buckets (a ring), each holding
  counts and a latency histogram of :data:`LATENCY_BUCKETS` log-spaced buckets; per target,
  a few counters and the last error. Recording is O(1) and allocation-free after a route's
  first second.
- Latency is measured from the moment the follower hands a dispatch to the sender until
  every target of it has finished (retries and backoff included).
- Percentiles are read from the histogram: the upper bound of the bucket holding the rank,
  so a reported p50/p99 is at most 25 % above the true value (bucket ratio 1.25) and never
  below it (except past the last bucket, ~4 min).
- Counts start at zero when the process starts (they are not read back from the log).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ("LATENCY_BUCKETS", "WINDOW", "RouteStats", "RouteTotals", "TargetOutcome")

WINDOW = 180
"""Seconds of history kept per route (one bucket per second)."""

LATENCY_BUCKETS = 64
"""Log-spaced latency buckets: bucket ``i`` holds latencies up to ``_FIRST * _RATIO**i``."""

_FIRST = 0.0001  # 100 µs
_RATIO = 1.25
_LOG_RATIO = math.log(_RATIO)
_RATE_SPAN = 10  # seconds the displayed events/s averages over
_RECENT_SPAN = 60  # seconds the error rate and percentiles are read over


@dataclass(frozen=True)
class TargetOutcome:
    """What became of one target of a dispatch: ``result`` is ``delivered``,
    ``dead_lettered`` or ``failed``; ``error`` the last error (empty when delivered)."""

    kind: str
    address: str
    result: str
    error: str = ""


@dataclass(frozen=True)
class RouteTotals:
    """One route's counts since start (for Prometheus): ``buckets`` pairs each latency upper
    bound (seconds) with the number of dispatches that took at most that long (cumulative)."""

    route: str
    events: int
    errors: int
    dead_lettered: int
    variants: dict[str, int]
    buckets: list[tuple[float, int]]
    latency_sum: float


def _bucket_of(latency: float) -> int:
    if latency <= _FIRST:
        return 0
    return min(LATENCY_BUCKETS - 1, math.ceil(math.log(latency / _FIRST) / _LOG_RATIO))


def _upper_bound(bucket: int) -> float:
    return _FIRST * _RATIO**bucket


class _Second:
    __slots__ = ("dead_lettered", "errors", "finished", "latency", "second")

    def __init__(self) -> None:
        self.second = -1
        self.finished = 0
        self.errors = 0
        self.dead_lettered = 0
        self.latency = [0] * LATENCY_BUCKETS

    def reset(self, second: int) -> None:
        self.second = second
        self.finished = self.errors = self.dead_lettered = 0
        latency = self.latency
        for i in range(LATENCY_BUCKETS):
            latency[i] = 0


@dataclass
class _Route:
    ring: list[_Second] = field(default_factory=lambda: [_Second() for _ in range(WINDOW)])
    events: int = 0
    errors: int = 0
    dead_lettered: int = 0
    variants: Counter[str] = field(default_factory=Counter)
    latency: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)
    latency_sum: float = 0.0


@dataclass
class _Target:
    delivered: int = 0
    failed: int = 0
    last_result: str = ""
    last_error: str = ""
    last_at: float = 0.0
    failing_since: float | None = None


def _percentile(histogram: list[int], total: int, fraction: float) -> float | None:
    if total == 0:
        return None
    rank = max(1, math.ceil(total * fraction))
    seen = 0
    for bucket, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return _upper_bound(bucket)
    return _upper_bound(LATENCY_BUCKETS - 1)


class RouteStats:
    """Per-route rates, errors, latency and split variants; per-target health.

    Not thread-safe: record and read on the gateway's event loop.

    Args:
        clock: wall-clock seconds (``time.time``); injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._routes: dict[str, _Route] = {}
        self._targets: dict[tuple[str, str], _Target] = {}

    def record(
        self,
        route: str,
        variant: str | None,
        latency: float,
        outcomes: Iterable[TargetOutcome],
        count: int = 1,
    ) -> None:
        """Count one finished dispatch of ``route`` (an error when a target was not delivered);
        ``count`` such dispatches, each with this latency and these outcomes, at once."""
        now = self._clock()
        stats = self._routes.get(route)
        if stats is None:
            stats = self._routes[route] = _Route()
        second = int(now)
        slot = stats.ring[second % WINDOW]
        if slot.second != second:
            slot.reset(second)
        failed = False
        dead = False
        for outcome in outcomes:
            target = self._targets.get((outcome.kind, outcome.address))
            if target is None:
                target = self._targets[(outcome.kind, outcome.address)] = _Target()
            target.last_result = outcome.result
            target.last_at = now
            if outcome.result == "delivered":
                target.delivered += count
                target.failing_since = None
            else:
                failed = True
                dead = dead or outcome.result == "dead_lettered"
                target.failed += count
                target.last_error = outcome.error
                if target.failing_since is None:
                    target.failing_since = now
        stats.events += count
        slot.finished += count
        if failed:
            stats.errors += count
            slot.errors += count
        if dead:
            stats.dead_lettered += count
            slot.dead_lettered += count
        if variant is not None:
            stats.variants[variant] += count
        bucket = _bucket_of(latency)
        slot.latency[bucket] += count
        stats.latency[bucket] += count
        stats.latency_sum += latency * count

    def snapshot(self, routes: Iterable[str]) -> dict[str, Any]:
        """Plain data for ``routes`` (in that order; routes never seen read as zero) and every
        target seen: rates over the last 10 s, error rate and percentiles over the last
        60 s, totals since start, and per-second series of the last :data:`WINDOW` s."""
        now = int(self._clock())
        out_routes = []
        for name in routes:
            stats = self._routes.get(name) or _Route()
            series_events = [0] * WINDOW
            series_errors = [0] * WINDOW
            histogram = [0] * LATENCY_BUCKETS
            recent_events = recent_errors = rate_events = 0
            for slot in stats.ring:
                age = now - slot.second
                if slot.second < 0 or not 0 <= age < WINDOW:
                    continue
                index = WINDOW - 1 - age
                series_events[index] = slot.finished
                series_errors[index] = slot.errors
                if age < _RATE_SPAN:
                    rate_events += slot.finished
                if age < _RECENT_SPAN:
                    recent_events += slot.finished
                    recent_errors += slot.errors
                    for bucket, count in enumerate(slot.latency):
                        if count:
                            histogram[bucket] += count
            out_routes.append(
                {
                    "name": name,
                    "events": stats.events,
                    "errors": stats.errors,
                    "dead_letters": stats.dead_lettered,
                    "rate": rate_events / _RATE_SPAN,
                    "error_rate": recent_errors / recent_events if recent_events else 0.0,
                    "p50": _percentile(histogram, recent_events, 0.50),
                    "p99": _percentile(histogram, recent_events, 0.99),
                    "variants": dict(stats.variants),
                    "series": {"events": series_events, "errors": series_errors},
                }
            )
        targets = [
            {
                "kind": kind,
                "address": address,
                "state": "ok" if t.last_result == "delivered" else "failing",
                "delivered": t.delivered,
                "failed": t.failed,
                "last_error": t.last_error,
                "last_at": t.last_at,
                "failing_since": t.failing_since,
            }
            for (kind, address), t in sorted(self._targets.items())
        ]
        return {"now": now, "window": WINDOW, "routes": out_routes, "targets": targets}

    def totals(self, every: int = 4) -> list[RouteTotals]:
        """Each route's totals since start, with a cumulative latency histogram at every
        ``every``-th bucket bound (4: bounds 2.44x apart, from 100 µs to about a minute)."""
        out = []
        for name, stats in sorted(self._routes.items()):
            cumulative = 0
            buckets = []
            for bucket, count in enumerate(stats.latency):
                cumulative += count
                if bucket % every == 0:
                    buckets.append((_upper_bound(bucket), cumulative))
            out.append(
                RouteTotals(
                    name,
                    stats.events,
                    stats.errors,
                    stats.dead_lettered,
                    dict(stats.variants),
                    buckets,
                    stats.latency_sum,
                )
            )
        return out
