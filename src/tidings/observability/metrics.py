"""Prometheus metrics of buses: :class:`Metrics`, :func:`metrics_app`, :func:`serve_metrics`.

Needs prometheus-client: ``pip install 'tidings[prometheus]'``.

::

    metrics = Metrics(bus)              # registers with prometheus_client's default registry
    serve_metrics(9464)                 # GET http://127.0.0.1:9464/metrics
    app = metrics_app()                 # or mount this ASGI app at /metrics

The metrics (names from the original design, prefixed ``tidings_``); ``topic`` is the topic
or pattern a subscription subscribed to and ``subscription`` its handler's qualified name:

========================================  =========  ==========================================
``tidings_events_total``                  counter    ``{topic, subscription, status}``: status
                                                     ``success`` (handler returned),
                                                     ``failed`` (handler raised; every attempt),
                                                     ``dropped`` (overflow policy discarded or
                                                     refused it), ``dead_lettered`` (given up
                                                     on: sent to the dead letters)
``tidings_event_latency_seconds``         histogram  ``{topic, subscription}``: publish to
                                                     handler completion, 1 µs to 5 s buckets
``tidings_event_loss_ratio``              gauge      ``{topic, subscription}``: (dropped +
                                                     dead-lettered) / (success + dropped +
                                                     dead-lettered) over the last 60 s
``tidings_queue_depth``                   gauge      ``{topic, subscription}``: events waiting
``tidings_queue_high_water``              gauge      ``{topic, subscription}``: most ever held
``tidings_redeliveries_total``            counter    ``{topic, subscription}``: transport
                                                     redeliveries
``tidings_publish_duration_seconds``      histogram  ``{topic}`` (the published topic): time
                                                     spent in ``publish``/``emit``
``tidings_trace_context_invalid_total``   counter    malformed incoming ``traceparent``
                                                     headers (with :class:`Tracing`)
``tidings_store_appends_total``           counter    records appended to the bus's store
``tidings_store_reads_total``             counter    records read from it (replays included)
``tidings_publish_failures_total``        counter    events a transport did not publish after
                                                     ``publish`` returned (also dead-lettered)
========================================  =========  ==========================================

**Cost.** The counters and gauges are read from the bus's own exact per-subscription
counters (:meth:`Bus.statistics <tidings.Bus.statistics>`) when Prometheus scrapes, so they
cost nothing per event. Latency is the only per-event work: one observation per dispatch for
inline handlers, taken around ``publish``, and one per call for queued, async and remote
handlers (see :mod:`tidings.observability._observer` for how each is timed). Each inline
subscription of a topic reports that topic's dispatch latencies.

**Sampled publish timing.** ``publish`` counts every publish exactly but times only about
one in ``time_every`` (64 by default; the gaps between timed ones are random, so periodic
traffic is not always timed on the same topic), each timed one standing for the publishes
since the last. So in ``tidings_publish_duration_seconds`` and in the inline handlers'
``tidings_event_latency_seconds``, ``_count`` (and the ``+Inf`` bucket) is exact, while the
buckets spread it in the proportions of the timed publishes (a topic none of whose
publishes was timed yet takes those of all topics) and ``_sum`` is ``_count`` times their
weighted mean. A publish from inside a handler is queued behind the current dispatch: it
is counted like any other (its handlers run when the queue is drained), and when timed, its
time in ``publish`` counts towards ``tidings_publish_duration_seconds`` only, so the inline
handlers' latency takes the proportions of the publishes that dispatched. ``emit`` and
every other handler call are each timed. ``time_every=1`` times every publish (exact
histograms, but for the latency of what handlers publish; two clock reads more per
publish).

**Cardinality guard.** Labels come from subscriptions, not from events, so a topic that
varies per event (``users.4711.updated``) never makes a series of its own under a pattern
subscription. The guard caps what is left: at most ``max_series`` distinct ``(topic,
subscription)`` pairs (subscriptions made in a loop) and ``max_topics`` published topics
(``tidings_publish_duration_seconds``); the rest are folded into ``topic="other"`` (and
``subscription="other"``), so memory and series stay bounded whatever the traffic.

Cancelled subscriptions' series disappear with them. Several buses may feed one
:class:`Metrics`; their series with equal labels are added up.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

try:
    from prometheus_client import make_asgi_app, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tidings.observability.metrics needs prometheus-client: install it with "
        "pip install 'tidings[prometheus]'"
    ) from exc

from tidings.bus import Bus, observation_port
from tidings.observability._observer import (
    BUCKETS,
    SAMPLE_EVERY,
    MetricsState,
    Observer,
    TopicHistograms,
    add_snapshots,
)
from tidings.subscription import INLINE, Subscription

__all__ = ("Metrics", "MetricsServer", "metrics_app", "serve_metrics")

STATUSES = ("success", "failed", "dropped", "dead_lettered")
"""The values of ``tidings_events_total``'s ``status`` label."""

_OTHER = ("other", "other")
_LE = (*(f"{b:g}" for b in BUCKETS), "+Inf")


@dataclass
class _Series:
    """One ``(topic, subscription)``'s figures, summed over subscriptions and buses."""

    success: int = 0
    failed: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    depth: int = 0
    high_water: int = 0
    redeliveries: int = 0
    latency: list[int] | None = None

    @property
    def lost(self) -> int:
        return self.dropped + self.dead_lettered

    @property
    def outcomes(self) -> int:
        return self.success + self.dropped + self.dead_lettered


class Metrics(Collector):
    """A Prometheus collector of the metrics of one or more buses (see the module docstring).

    Args:
        buses: buses to observe now; add more with :meth:`observe`.
        registry: register with this registry (prometheus-client's default one when
            ``None``); ``False`` registers nowhere.
        max_series: at most this many ``(topic, subscription)`` label pairs; the rest are
            counted under ``other``.
        max_topics: at most this many published topics per bus for the publish duration;
            the rest are counted under ``other``.
        loss_window: the seconds ``tidings_event_loss_ratio`` looks back over.
        time_every: time about one ``publish`` dispatch in this many, each counted (see
            *Sampled dispatch timing* above); 1 times every one.

    Raises:
        ValueError: if a limit is not positive, or the registry already has these metrics
            (one :class:`Metrics` per registry: observe every bus with it).
    """

    def __init__(
        self,
        *buses: Bus,
        registry: CollectorRegistry | bool | None = None,
        max_series: int = 1000,
        max_topics: int = 200,
        loss_window: float = 60.0,
        time_every: int = SAMPLE_EVERY,
    ) -> None:
        if max_series < 1 or max_topics < 1 or not loss_window > 0 or time_every < 1:
            raise ValueError("max_series, max_topics, loss_window and time_every must be positive")
        self.max_series = max_series
        self.max_topics = max_topics
        self.loss_window = loss_window
        self.time_every = time_every
        self._buses: weakref.WeakSet[Bus] = weakref.WeakSet()
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}
        # Counts seen at each scrape, oldest first; the first entry stands for "no events yet".
        self._history: deque[tuple[float, dict[tuple[str, str], tuple[int, int]]]] = deque(
            [(time.monotonic(), {})]
        )
        self._lock = threading.Lock()
        for bus in buses:
            self.observe(bus)
        if registry is None:
            registry = REGISTRY
        if isinstance(registry, CollectorRegistry):
            registry.register(self)
        self.registry = registry if isinstance(registry, CollectorRegistry) else None

    def observe(self, bus: Bus) -> None:
        """Count ``bus``'s events from now on. Idempotent."""
        observer = Observer.of(observation_port(bus))
        if observer.metrics is None:
            observer.metrics = MetricsState(self.max_topics, self.time_every)
            observer.install()
        self._buses.add(bus)

    def forget(self, bus: Bus) -> None:
        """Stop counting ``bus``'s events and drop its series. Idempotent."""
        observer = observation_port(bus).observer
        if observer is not None and observer.metrics is not None:
            observer.metrics = None
            observer.install()
        self._buses.discard(bus)

    # ------------------------------------------------------------------ collecting

    def _label(self, sub: Subscription[Any]) -> tuple[str, str]:
        key = (sub.pattern, sub.name)
        label = self._labels.get(key)
        if label is None:
            label = key if len(self._labels) < self.max_series else _OTHER
            self._labels[key] = label
        return label

    def _gather(self) -> tuple[dict[tuple[str, str], _Series], dict[str, list[int]], list[int]]:
        """Every observed bus's figures by label. The labels of subscriptions no longer alive
        are freed first, so ``max_series`` bounds the live series, however many came and
        went."""
        with self._lock:
            alive = {
                (sub.pattern, sub.name)
                for bus in list(self._buses)
                for sub in observation_port(bus).all_subscriptions()
            }
            for key in self._labels.keys() - alive:
                del self._labels[key]
            return self._gather_labelled()

    def _gather_labelled(
        self,
    ) -> tuple[dict[tuple[str, str], _Series], dict[str, list[int]], list[int]]:
        series: dict[tuple[str, str], _Series] = {}
        durations: dict[str, list[int]] = {}
        totals = [0, 0, 0, 0]  # invalid trace contexts, store appends and reads, publish failures
        for bus in list(self._buses):
            port = observation_port(bus)
            observer = port.observer
            state = observer.metrics if observer is not None else None
            if observer is None or state is None:
                continue
            tracing = observer.tracing
            totals[0] += int(getattr(tracing, "invalid_contexts", 0))
            totals[1] += state.appended
            totals[2] += state.read
            totals[3] += state.publish_failed
            for topic, snap in state.published.snapshot().items():
                durations[topic] = (
                    add_snapshots(durations[topic], snap) if topic in durations else snap
                )
            dispatched = state.published.snapshot(dispatches=True)
            local = {id(s) for s in port.local_subscriptions()}
            for sub in observer.subscriptions():
                if not sub.observed:
                    continue
                one = series.setdefault(self._label(sub), _Series())
                stats = sub.statistics()
                one.success += stats.delivered
                one.failed += stats.failed
                one.dropped += stats.dropped
                one.depth += stats.queue_depth
                one.high_water += stats.high_water
                one.dead_lettered += state.dead_lettered.get(sub.id, 0)
                one.redeliveries += state.redelivered.get(sub.id, 0)
                latency = _latency(sub, state, dispatched, id(sub) in local)
                if latency is not None:
                    one.latency = (
                        latency if one.latency is None else add_snapshots(one.latency, latency)
                    )
        return series, durations, totals

    def _loss(self, series: dict[tuple[str, str], _Series]) -> dict[tuple[str, str], float]:
        """Loss ratios over the window, from the counts seen at this and earlier scrapes."""
        now = time.monotonic()
        current = {key: (s.lost, s.outcomes) for key, s in series.items()}
        with self._lock:
            history = self._history
            history.append((now, current))
            while len(history) > 2 and history[1][0] <= now - self.loss_window:
                history.popleft()  # keep one snapshot at or before the window's start
            base = history[0][1]
        ratios = {}
        for key, (lost, outcomes) in current.items():
            lost0, outcomes0 = base.get(key, (0, 0))
            if outcomes < outcomes0:  # the series restarted (its subscriptions changed)
                lost0 = outcomes0 = 0
            seen = outcomes - outcomes0
            ratios[key] = (lost - lost0) / seen if seen > 0 else 0.0
        return ratios

    def collect(self) -> Iterator[Metric]:
        """The metric families, read from the observed buses now."""
        series, durations, totals = self._gather()
        labels = ["topic", "subscription"]
        events = CounterMetricFamily(
            "tidings_events", "Events per subscription by outcome.", labels=[*labels, "status"]
        )
        latency = HistogramMetricFamily(
            "tidings_event_latency_seconds",
            "Publish to handler completion.",
            labels=labels,
        )
        loss = GaugeMetricFamily(
            "tidings_event_loss_ratio",
            f"Dropped and dead-lettered over all outcomes, last {self.loss_window:g} s.",
            labels=labels,
        )
        depth = GaugeMetricFamily(
            "tidings_queue_depth", "Events waiting in the subscription's buffer.", labels=labels
        )
        high = GaugeMetricFamily(
            "tidings_queue_high_water", "Most events the buffer ever held.", labels=labels
        )
        redeliveries = CounterMetricFamily(
            "tidings_redeliveries", "Transport redeliveries.", labels=labels
        )
        for key, one in sorted(series.items()):
            for status in STATUSES:
                events.add_metric([*key, status], getattr(one, status))
            depth.add_metric(list(key), one.depth)
            high.add_metric(list(key), one.high_water)
            redeliveries.add_metric(list(key), one.redeliveries)
            if one.latency is not None:
                latency.add_metric(list(key), *_buckets(one.latency))
        for key, ratio in sorted(self._loss(series).items()):
            loss.add_metric(list(key), ratio)
        publish = HistogramMetricFamily(
            "tidings_publish_duration_seconds", "Time spent in publish or emit.", labels=["topic"]
        )
        for topic, snap in sorted(durations.items()):
            publish.add_metric([topic], *_buckets(snap))
        invalid = CounterMetricFamily(
            "tidings_trace_context_invalid", "Malformed incoming traceparent headers."
        )
        invalid.add_metric([], totals[0])
        appends = CounterMetricFamily("tidings_store_appends", "Records appended to the store.")
        appends.add_metric([], totals[1])
        reads = CounterMetricFamily("tidings_store_reads", "Records read from the store.")
        reads.add_metric([], totals[2])
        yield from (events, latency, loss, depth, high, redeliveries, publish, invalid)
        publish_failures = CounterMetricFamily(
            "tidings_publish_failures",
            "Events a transport did not publish after publish() returned.",
        )
        publish_failures.add_metric([], totals[3])
        yield from (appends, reads, publish_failures)

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples (lets the registry refuse duplicates)."""
        names: list[tuple[Callable[..., Metric], str]] = [
            (CounterMetricFamily, "tidings_events"),
            (HistogramMetricFamily, "tidings_event_latency_seconds"),
            (GaugeMetricFamily, "tidings_event_loss_ratio"),
            (GaugeMetricFamily, "tidings_queue_depth"),
            (GaugeMetricFamily, "tidings_queue_high_water"),
            (CounterMetricFamily, "tidings_redeliveries"),
            (HistogramMetricFamily, "tidings_publish_duration_seconds"),
            (CounterMetricFamily, "tidings_trace_context_invalid"),
            (CounterMetricFamily, "tidings_store_appends"),
            (CounterMetricFamily, "tidings_store_reads"),
            (CounterMetricFamily, "tidings_publish_failures"),
        ]
        return [family(name, "") for family, name in names]

    def summary(self) -> str:
        """A few lines for people: per subscription, its outcomes, p50/p99 latency and loss."""
        series, _, _ = self._gather()
        ratios = self._loss(series)
        lines = []
        for key, one in sorted(series.items()):
            quantiles = ""
            if one.latency is not None and any(one.latency[:-1]):
                p50, p99 = _quantile(one.latency, 0.5), _quantile(one.latency, 0.99)
                quantiles = f"; p50 <= {_seconds(p50)}, p99 <= {_seconds(p99)}"
            counts = ", ".join(f"{s} {getattr(one, s)}" for s in STATUSES if getattr(one, s))
            lines.append(
                f"{key[1]} ({key[0]}): {counts or 'no events'}{quantiles}; "
                f"loss {ratios.get(key, 0.0):.1%}"
            )
        return "\n".join(lines)


def _latency(
    sub: Subscription[Any], state: MetricsState, dispatched: dict[str, list[int]], local: bool
) -> list[int] | None:
    """``sub``'s latency: its own calls, plus its topics' dispatches for a local inline one."""
    own = state.handled.get(sub.id)
    total = own.snapshot() if own is not None else None
    if sub.kind == INLINE and local:
        matches_type = sub.event_type or object
        for topic, snap in dispatched.items():
            if topic != TopicHistograms.OTHER and sub.matches(topic, matches_type):
                total = snap if total is None else add_snapshots(total, snap)
    return total


def _buckets(snap: list[int]) -> tuple[list[tuple[str, float]], float]:
    cumulative, running = [], 0
    for le, count in zip(_LE, snap[:-1], strict=True):
        running += count
        cumulative.append((le, float(running)))
    return cumulative, snap[-1] / 1e9


def _quantile(snap: list[int], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (inf above the last bound)."""
    counts = snap[:-1]
    rank, running = q * sum(counts), 0
    for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
        running += count
        if running >= rank:
            return bound
    return float("inf")  # pragma: no cover - rank never exceeds the total


def _seconds(value: float) -> str:
    if value == float("inf"):
        return "> 5 s"
    if value < 1e-3:
        return f"{value * 1e6:g} µs"
    if value < 1:
        return f"{value * 1e3:g} ms"
    return f"{value:g} s"


def metrics_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """An ASGI app serving ``registry`` (the default one when ``None``) in Prometheus text
    format: mount it at ``/metrics``."""
    app: Callable[..., Any] = make_asgi_app(REGISTRY if registry is None else registry)
    return app


class MetricsServer:
    """A running :func:`serve_metrics` HTTP server; :meth:`close` stops it.

    Attributes:
        port: the port it listens on (the one chosen when 0 was asked for).
        url: ``http://<addr>:<port>/metrics``.
    """

    def __init__(self, server: Any, thread: threading.Thread, addr: str) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port
        self.url = f"http://{addr}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (the default one when ``None``) on ``http://addr:port/metrics`` from
    a daemon thread. Listens on loopback unless told otherwise: pass ``addr="0.0.0.0"`` for a
    Prometheus on another host. ``port=0`` picks a free port (see :attr:`MetricsServer.port`).

    Raises:
        OSError: if the address cannot be bound.
    """
    server, thread = start_http_server(port, addr, REGISTRY if registry is None else registry)
    return MetricsServer(server, thread, addr)
