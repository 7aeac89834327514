"""The hooks :mod:`tidings.observability` attaches to one bus: the :class:`Observer`.

Nothing here imports OpenTelemetry or prometheus-client: this module holds what runs per
event, which must stay cheap, and the hooks the bus calls.

How an observer reaches a bus, costing an unobserved bus nothing: only through the bus's
one observation seam, :class:`~tidings._ports.ObservationPort` (``tidings.bus.observation_port``):

- **publish**: :meth:`Observer.install` gives the port (:meth:`ObservationPort.attach
  <tidings._ports.ObservationPort.attach>`) an :class:`~tidings._speedups.ObservedPublisher`
  for the bus's ``publish`` to call in place of its own publisher: the bus's hot path
  (compiled with it when the install could) with this observer's two per-publish tests
  first, :class:`TracingHook`'s quick gate (a call into C: an empty current context cannot
  be sampled) and the metrics countdown. A publish to plain sync handlers that neither
  stops is published there and, with metrics, counted by appending its topic to the
  topic histograms' ``marks``: :meth:`Bus.publish` stays the bus's ``publish``, and no
  Python frame of the observer runs. Every other publish (traced, timed, or not on the hot
  path: a carrier, handlers not all plain) goes whole to the publisher's one hook (metrics,
  tracing or both), which counts it, times it when the countdown ran out, and publishes it
  through ``ObservationPort.publish_each`` with trace headers when the full gate says it is
  traced (every handler called through :meth:`Subscription.call`), else on the bus's own
  publisher or through ``ObservationPort.publish_routed``.
- **emit**: the port swaps the bus's class for a subclass whose ``emit`` is the emit hook
  (timed, traced when the gate says so), so :meth:`Bus.emit` itself carries no check.
- **subscriptions** are observed (:meth:`Subscription.observe`), those that are
  :attr:`~tidings.Subscription.observable` (not streams, not :meth:`Bus.record`'s
  recorder): calls the bus makes through :meth:`Subscription.call` come to
  :meth:`Observer.call` with the envelope. The inlined fast paths still call plain handlers
  straight; an untraced event costs inline handlers nothing.
- **a transport's deliveries**: the remote side (:mod:`tidings._remote`) runs each one
  inside :meth:`Observer.delivering`, which publishes the delivery attempt and group in
  :data:`DELIVERY`.
- **failures**: the bus's :class:`~tidings.dispatch.FailureReporter` calls
  :meth:`Observer.failed` (a failure is off the hot path).
- **the durable log** (:mod:`tidings._log`) counts appends and reads through
  :meth:`Observer.store_counted`, and runs its followers' handler calls inside
  :func:`replaying`, so their spans link to the events' original traces.

Latency is observed once per publish for inline handlers (publish to the end of the
dispatch, ``perf_counter``: sub-microsecond): every ``publish`` is counted exactly in its
topic's series, but only about one in :data:`SAMPLE_EVERY` (or in ``time_every``), at
random, is timed, standing for the publishes since the last timed one (see
:class:`TopicHistograms`); every ``emit`` is timed. A publish from inside a handler (queued
behind the current dispatch) is counted like any other, and when its turn to be timed
comes, its time spent in ``publish`` (the queueing) counts towards the topic's publish
durations but not towards its handlers' latency: whether a publish is queued is looked up
(one thread-local read) only for the timed ones, since the bus looks it up again itself
and two look-ups were a third of the hook's cost. It is observed once per handler call for
queued, async and remote handlers, from the event's hybrid-clock time (``time_ns() -
envelope.time``: the clock's physical granule makes that up to 65.5 µs long, and across
machines it includes their clock offset). Events delivered from the durable log (catch-up
and durable subscriptions) are counted but not timed: their publish may be long past.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import random
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from tidings._speedups import ObservedPublisher
from tidings.event import NO_HEADERS, Envelope
from tidings.subscription import INLINE, SKIP, TASK, Subscription

if TYPE_CHECKING:
    from tidings import _fastpath
    from tidings._ports import ObservationPort
    from tidings.results import Delivery
    from tidings.routing import Route

__all__ = (
    "BUCKETS",
    "DELIVERY",
    "SAMPLE_EVERY",
    "DeliveryMark",
    "Histogram",
    "MetricsState",
    "Observer",
    "PublishGate",
    "TopicHistograms",
    "TracingHook",
    "replaying",
)

BUCKETS: tuple[float, ...] = (
    *(1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4),
    *(1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
"""Latency bucket bounds in seconds: 1 µs (in process) to 5 s (across machines)."""

_BOUNDS_NS = tuple(round(b * 1e9) for b in BUCKETS)
_CELL = len(_BOUNDS_NS) + 2  # one count per bound, one above them all, then the sum in ns
SAMPLE_EVERY = 64
"""How often, on average, a ``publish`` is timed unless told otherwise
(:class:`MetricsState`'s ``time_every``): each is counted, and the gaps between timed ones
are drawn at random from 1 to ``2 * time_every - 1`` (so no periodic traffic is always timed
on the same topic); each timed publish stands for its gap. 1 times every publish."""
_now_ns = time.time_ns

DeliveryMark = tuple[int, str | None, bool, int | None]
"""``(attempt, group, replay, body size)`` of a delivery: the transport's delivery attempt,
the group it was delivered to, whether it is a replay from the durable log, and the size of
the message's body in bytes as received (``None`` when not known: replays)."""

DELIVERY: ContextVar[DeliveryMark | None] = ContextVar("tidings_delivery", default=None)
"""The :data:`DeliveryMark` of the delivery being handled in this context: set for a
transport's deliveries and, by :func:`replaying`, for the durable log's replays."""


@contextlib.contextmanager
def replaying() -> Iterator[None]:
    """Mark the handler calls made inside as replays of stored events: their spans link to
    the events' original traces instead of joining them.

    The durable log's hook: when the bus replays from its store, the one line it needs is
    ``with replaying():`` around its handler calls.
    """
    token = DELIVERY.set((1, None, True, None))
    try:
        yield
    finally:
        DELIVERY.reset(token)


class Histogram:
    """A latency histogram in nanoseconds that takes no lock: each thread counts into cells
    of its own, and :meth:`snapshot` adds them up (reading another thread's int is atomic)."""

    __slots__ = ("_cells", "_local", "_lock")

    def __init__(self) -> None:
        self._local = threading.local()
        self._cells: list[list[int]] = []
        self._lock = threading.Lock()

    def observe(self, ns: int) -> None:
        """Count one value, in nanoseconds."""
        try:
            cell: list[int] = self._local.cell
        except AttributeError:
            cell = self._local.cell = [0] * _CELL
            with self._lock:
                self._cells.append(cell)
        cell[bisect_left(_BOUNDS_NS, ns)] += 1
        cell[-1] += ns

    def snapshot(self) -> list[int]:
        """Per-bucket counts (not cumulative; the last but one is above every bound), then
        the sum in nanoseconds."""
        with self._lock:
            cells = list(self._cells)
        return _add_up(cells)


def add_snapshots(a: list[int], b: list[int]) -> list[int]:
    """The sum of two :meth:`Histogram.snapshot` results."""
    return [x + y for x, y in zip(a, b, strict=True)]


class TopicHistograms:
    """Latency histograms per topic, for the publish hot path, whose counts are exact but
    whose values may be a sample.

    The hot path takes no lock: it marks each unsampled observation by appending its topic
    to :attr:`marks`, and each sampled one by appending ``(topic, seconds, weight,
    dispatch)`` to :attr:`values` (one list each for every topic: ``list.append`` is atomic
    and looks nothing up). :meth:`fold` counts both into the topics' exact counts and bucket
    counts, under the lock: when scraped, and when the hot path finds :meth:`due`. Each
    value is counted in its topic's weighted bucket counts, standing for ``weight``
    observations; values that time a dispatch (not a publish queued behind the current
    one) are also counted in its dispatch bucket counts. :meth:`snapshot` spreads each
    topic's exact count over its buckets in the proportions of its weighted values (largest
    remainders, so the buckets add up to the count exactly; a topic with no value yet takes
    the proportions of all topics'), and gives the sum as the count times their weighted
    mean. When every value has weight 1, that is exactly the values' histogram. At most
    ``max_topics`` topics; the others count under ``"other"``.
    """

    __slots__ = ("_cells", "_counts", "_dispatch_cells", "_lock", "marks", "max_topics", "values")

    OTHER = "other"
    FOLD_MARKS = 4096
    """:meth:`due` once this many marks wait (or :attr:`FOLD_VALUES` values)."""
    FOLD_VALUES = 64

    def __init__(self, max_topics: int) -> None:
        self.marks: list[str] = []
        self.values: list[tuple[str, float, int, bool]] = []
        self.max_topics = max_topics
        self._counts: dict[str, int] = {}
        self._cells: dict[str, list[int]] = {}
        self._dispatch_cells: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def _name(self, topic: str) -> str:
        """The series ``topic`` is counted in (under the lock): its own, made on first use,
        or ``"other"`` past the cap."""
        if topic in self._cells:
            return topic
        name = self.OTHER if len(self._cells) >= self.max_topics else topic
        if name not in self._cells:
            self._cells[name] = [0] * _CELL
            self._dispatch_cells[name] = [0] * _CELL
            self._counts[name] = 0
        return name

    def due(self) -> bool:
        """Whether enough marks or values wait to :meth:`fold` them now (which bounds
        their lists' length)."""
        return len(self.marks) >= self.FOLD_MARKS or len(self.values) >= self.FOLD_VALUES

    def fold(self) -> None:
        """Count the marks and values made so far into their topics."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        """:meth:`fold`, under the lock: values first, then marks (the order in which new
        topics take the ``max_topics`` series). What is appended meanwhile stays, for the
        next."""
        marks, values = self.marks, self.values
        sampled = values[:]
        del values[: len(sampled)]
        for topic, seconds, weight, dispatch in sampled:
            self._count(topic, seconds, weight, dispatch)
        taken = marks[:]
        del marks[: len(taken)]
        if taken:
            first = taken[0]
            same = taken.count(first)  # one topic, usually: a scan in C
            tallies = {first: same} if same == len(taken) else collections.Counter(taken)
            for topic, tally in tallies.items():
                self._counts[self._name(topic)] += tally

    def _count(self, topic: str, seconds: float, weight: int, dispatch: bool) -> None:
        """Count one value (under the lock)."""
        name = self._name(topic)
        self._counts[name] += 1
        bucket, ns = bisect_left(BUCKETS, seconds), round(seconds * 1e9) * weight
        cell = self._cells[name]
        cell[bucket] += weight
        cell[-1] += ns
        if dispatch:
            cell = self._dispatch_cells[name]
            cell[bucket] += weight
            cell[-1] += ns

    def observe(self, topic: str, seconds: float, weight: int = 1, dispatch: bool = True) -> None:
        """Count one observation for ``topic``, of ``seconds``, a value standing for
        ``weight`` observations (this one and ``weight - 1`` marked without a value);
        ``dispatch``: it times a dispatch (not a publish queued behind another's)."""
        with self._lock:
            self._count(topic, seconds, weight, dispatch)

    def snapshot(self, dispatches: bool = False) -> dict[str, list[int]]:
        """Per topic, as :meth:`Histogram.snapshot`; ``dispatches``: in the proportions of
        the values that timed dispatches only (a topic with none takes those of all
        topics' dispatches)."""
        with self._lock:
            self._fold()
            source = self._dispatch_cells if dispatches else self._cells
            cells = {name: list(cell) for name, cell in source.items()}
            counts = dict(self._counts)
        pooled = _add_up(list(cells.values()))
        return {
            name: _apportioned(cell if any(cell[:-1]) else pooled, counts[name])
            for name, cell in cells.items()
        }


def _apportioned(cell: list[int], count: int) -> list[int]:
    """``count`` observations spread over ``cell``'s buckets in the proportions of its
    (weighted) bucket counts, by largest remainders; the sum scaled to match."""
    weights = cell[:-1]
    total = sum(weights)
    if total == 0:  # no value at all yet: nothing to say where they fall
        return [0] * (len(weights) - 1) + [count, 0]
    shares = [divmod(count * w, total) for w in weights]
    out = [share for share, _ in shares]
    left = count - sum(out)
    for i in sorted(range(len(shares)), key=lambda i: -shares[i][1])[:left]:
        out[i] += 1
    out.append(cell[-1] * count // total)
    return out


def _add_up(cells: list[list[int]]) -> list[int]:
    total = [0] * _CELL
    for cell in cells:
        for i, value in enumerate(cell):
            total[i] += value
    return total


class MetricsState:
    """What one observed bus counts per event for :class:`~tidings.observability.Metrics`;
    everything else is read from the bus's own counters when scraped.

    Attributes:
        published: per topic, each publish and emit: time spent in it (the publish
            duration); for those that dispatched (not queued behind the current dispatch),
            publish to the end of the dispatch: the latency of the inline handlers.
        handled: per subscription id, latency of queued, async and remote handler calls.
        dead_lettered: per subscription id, events given up on and dead-lettered.
        redelivered: per subscription id, handler calls for a transport's redelivery (a
            subscription that already succeeded, or does not match, is not called again).
        appended, read: store records appended and read (the store's hook).
        publish_failed: events a transport did not publish after ``publish`` returned.
        time_every: a ``publish`` is timed about once in this many (see
            :data:`SAMPLE_EVERY`).
    """

    __slots__ = (
        "_lock",
        "appended",
        "dead_lettered",
        "handled",
        "publish_failed",
        "published",
        "read",
        "redelivered",
        "time_every",
    )

    def __init__(self, max_topics: int, time_every: int = SAMPLE_EVERY) -> None:
        self.published = TopicHistograms(max_topics)
        self.handled: dict[int, Histogram] = {}
        self.dead_lettered: dict[int, int] = {}
        self.redelivered: dict[int, int] = {}
        self.appended = 0
        self.read = 0
        self.publish_failed = 0
        self.time_every = time_every
        self._lock = threading.Lock()

    def histogram(self, sub: Subscription[Any]) -> Histogram:
        """The per-call latency histogram of ``sub``."""
        hist = self.handled.get(sub.id)
        if hist is None:
            with self._lock:
                hist = self.handled.setdefault(sub.id, Histogram())
        return hist

    def handled_now(self, sub: Subscription[Any], env: Envelope[Any]) -> None:
        """Count one handler call of ``sub`` for ``env`` finished now."""
        self.histogram(sub).observe(max(_now_ns() - env.time, 0))

    def count(self, table: dict[int, int], sub: Subscription[Any]) -> None:
        """Add one to ``sub``'s entry of ``table`` (off the hot path)."""
        with self._lock:
            table[sub.id] = table.get(sub.id, 0) + 1


PublishGate = tuple[Callable[[], object], Callable[[Mapping[str, str] | None], bool]]
"""``(quick, gate)``: when ``quick()`` (a call into C, no Python frame) is false, a publish
without headers made now is not traced; otherwise ``gate(headers)`` says whether it is."""


class TracingHook(Protocol):
    """What :class:`Observer` needs of :class:`~tidings.observability.Tracing`."""

    def gate(self, headers: Mapping[str, str] | None) -> bool:
        """Whether a publish with ``headers``, made now, is traced."""

    def publish_gate(self, reinstall: Callable[[], None]) -> PublishGate | None:
        """How an observed bus's publisher (``quick``, on its hot path) and its hook decide,
        as cheaply as the sampler allows, whether a publish made now is traced; ``None``
        when nothing can be traced. ``reinstall`` rebuilds the publisher when that changes
        (a tracer provider set after the fact)."""

    def traces(self, env: Envelope[Any]) -> bool:
        """Whether a handler call for ``env`` gets a span."""

    def send(
        self,
        topic: str,
        headers: Mapping[str, str] | None,
        publish: Callable[[Mapping[str, str]], Envelope[Any]],
    ) -> Envelope[Any]:
        """Publish in a producer span, passing ``publish`` the headers with trace context."""

    async def asend(
        self,
        topic: str,
        headers: Mapping[str, str] | None,
        emit: Callable[[Mapping[str, str]], Awaitable[Delivery[Any]]],
    ) -> Delivery[Any]:
        """As :meth:`send`, for :meth:`Bus.emit`."""

    def process(
        self,
        sub: Subscription[Any],
        envs: Envelope[Any] | list[Envelope[Any]],
        delivery: DeliveryMark | None,
        call: Callable[[], Any],
    ) -> Any:
        """Run ``call`` (a handler call for ``envs``) in a consumer span; for a coroutine
        handler, return a coroutine that runs it in the span."""


class Observer:
    """Everything :mod:`tidings.observability` attaches to one bus (see the module docstring).

    Get it with :meth:`of`; set :attr:`tracing` or :attr:`metrics` and call
    :meth:`install`. With neither left, :meth:`install` takes every hook off the bus.
    """

    def __init__(self, port: ObservationPort) -> None:
        self.port = port
        self.tracing: TracingHook | None = None
        self.metrics: MetricsState | None = None
        self.system = port.transport_system or "tidings"

    @classmethod
    def of(cls, port: ObservationPort) -> Observer:
        """The observer of the bus behind ``port``, made on first use."""
        observer = port.observer
        return observer if observer is not None else cls(port)

    # ------------------------------------------------------------------ attaching

    def install(self) -> None:
        """Attach the hooks for the parts set to the bus (or take them all off)."""
        active = self.tracing is not None or self.metrics is not None
        if active:
            self.port.attach(self, self._publish(), self._emit())
        else:
            self.port.attach(None, None, None)
        for sub in self.subscriptions():
            if sub.observable:  # not a stream nor a recorder
                sub.observe(active)
        # attach() dropped the routes; they are rebuilt with the subscriptions' new plainness
        # when next used.

    def subscriptions(self) -> tuple[Subscription[Any], ...]:
        """The bus's subscriptions, its durable log's followers included."""
        return self.port.all_subscriptions()

    def _publish(self) -> _fastpath.ObservedPublisher | None:
        """The publisher of the bus with the tests of the parts set, or ``None`` for none."""
        port, tracing, metrics = self.port, self.tracing, self.metrics
        gate = tracing.publish_gate(self.install) if tracing is not None else None
        if gate is None and metrics is None:
            return None
        each = port.publish_each
        send = tracing.send if tracing is not None else None

        def traced(
            route: Route, event: Any, key: str | None, headers: Mapping[str, str] | None
        ) -> Envelope[Any]:
            assert send is not None
            return send(route.topic, headers, lambda h: each(route, event, key, h))

        quick, decide = gate if gate is not None else (None, _untraced)
        return _observed_publisher(port, metrics, traced, quick, decide)

    def _emit(self) -> Callable[..., Coroutine[Any, Any, Delivery[Any]]] | None:
        port, tracing, metrics = self.port, self.tracing, self.metrics
        if tracing is None and metrics is None:
            return None
        original = port.emit_unhooked

        async def emit(
            event: Any,
            *,
            topic: str | None = None,
            key: str | None = None,
            headers: Mapping[str, str] | None = None,
        ) -> Delivery[Any]:
            t0 = time.perf_counter()
            if tracing is not None and tracing.gate(headers):
                route = port.route(type(event), topic)
                delivery = await tracing.asend(
                    route.topic, headers, lambda h: original(event, topic=topic, key=key, headers=h)
                )
            else:
                delivery = await original(event, topic=topic, key=key, headers=headers)
            if metrics is not None:
                metrics.published.observe(delivery.envelope.topic, time.perf_counter() - t0)
            return delivery

        return emit

    @contextlib.contextmanager
    def delivering(
        self, attempt: int, group: str | None, body_size: int | None = None
    ) -> Iterator[None]:
        """Mark the handler calls made inside as a transport's delivery ``attempt`` to
        ``group`` of a message whose body is ``body_size`` bytes: the remote side's hook
        (:mod:`tidings._remote`)."""
        token = DELIVERY.set((attempt, group, False, body_size))
        try:
            yield
        finally:
            DELIVERY.reset(token)

    # ------------------------------------------------------------------ the bus's calls

    def inlines(self, sub: Subscription[Any]) -> bool:
        """Metrics time async handlers per call, so they leave the inlined fast path."""
        return self.metrics is None or sub.kind != TASK

    def call(self, sub: Subscription[Any], arg: Any) -> Any:
        """Call ``sub``'s handler for ``arg`` (an envelope, or a batch's list), in a span when
        traced, timed when its latency is not counted per dispatch."""
        tracing, metrics = self.tracing, self.metrics
        delivery = DELIVERY.get()
        if metrics is not None and delivery is not None and delivery[0] > 1:
            # Called again for a transport's redelivery (replays are attempt 1): counted
            # here, so that subscriptions skipped or filtered out on this attempt are not.
            metrics.count(metrics.redelivered, sub)
        batch = type(arg) is list
        if tracing is not None and (batch or tracing.traces(arg)):
            result = tracing.process(sub, arg, delivery, lambda: sub.call_handler(arg))
        else:
            result = sub.call_handler(arg)
        if metrics is None or result is SKIP:
            return result
        if delivery is None and sub.kind == INLINE:
            return result  # inline handlers in process: timed once per dispatch
        if delivery is not None and delivery[2]:
            return result  # from the durable log: its publish may be days old
        if sub.kind == TASK:
            return _timed(metrics, sub, arg, result)
        for env in arg if batch else (arg,):
            metrics.handled_now(sub, env)
        return result

    def failed(
        self, sub: Subscription[Any], env: Envelope[Any], exc: BaseException, final: bool
    ) -> None:
        """Told of every handler failure; ``final``: the event is dead-lettered."""
        metrics = self.metrics
        if metrics is not None and final:
            metrics.count(metrics.dead_lettered, sub)

    # ------------------------------------------------------------------ the store's hook

    def publish_failed(self) -> None:
        """Count an event a transport did not publish (reported after ``publish``)."""
        metrics = self.metrics
        if metrics is not None:
            with metrics._lock:
                metrics.publish_failed += 1

    def store_counted(self, appended: int, read: int) -> None:
        """Count records appended to and read from the bus's store (the durable log calls
        this: write-ahead appends, log followers' reads, :meth:`Bus.replay`)."""
        metrics = self.metrics
        if metrics is not None:
            with metrics._lock:
                metrics.appended += appended
                metrics.read += read


_GAPS = 1024
"""How many gaps between timed publishes each publish hook draws at random, then takes in turn,
over and over (a period of about ``1024 * time_every`` publishes)."""

_Traced = Callable[["Route", Any, str | None, Mapping[str, str] | None], Envelope[Any]]


def _observed_publisher(
    port: ObservationPort,
    metrics: MetricsState | None,
    traced: _Traced,
    quick: Callable[[], object] | None,
    decide: Callable[[Mapping[str, str] | None], bool],
) -> _fastpath.ObservedPublisher:
    """The bus's :class:`~tidings._speedups.ObservedPublisher` and its hook, which publishes,
    observed, each event the fast path leaves it: traced through ``traced`` when the gate
    (``quick``, then ``decide``) says so, else on the bus's own hot path (plain sync
    handlers) or through ``ObservationPort.publish_routed``; with ``metrics``, counted in its
    topic's exact count, and timed (two clock reads) when the countdown ran out, standing for
    the publishes since the last timed one (then the next gap is set)."""
    plain, routed = port.publisher.publish_plain, port.publish_routed

    def publish(
        route: Route,
        handlers: tuple[Callable[[Any], object], ...] | None,
        count: Iterator[int],
        topic: str,
        event: Any,
        key: str | None,
        headers: Mapping[str, str],
    ) -> Envelope[Any]:
        given = None if headers is NO_HEADERS else headers  # checked (and copied) by the bus
        if quick is not None and (given is not None or quick()) and decide(given):
            return traced(route, event, key, given)
        if handlers is None:  # not the bus's hot path: a carrier, or handlers not all plain
            return routed(route, event, key, given)
        env: Envelope[Any] = plain(route, handlers, count, topic, event, key, headers)
        return env

    if metrics is None:
        return ObservedPublisher(port.publisher, publish, quick, None, NO_HEADERS)
    threads, clock, published = port.dispatching, time.perf_counter, metrics.published
    mark, sample = published.marks.append, published.values.append
    most = 2 * metrics.time_every - 1
    gaps = itertools.cycle([1 + int(random.random() * most) for _ in range(_GAPS)])
    gap = 1  # the first publish is timed

    def counted(
        route: Route,
        handlers: tuple[Callable[[Any], object], ...] | None,
        count: Iterator[int],
        topic: str,
        event: Any,
        key: str | None,
        headers: Mapping[str, str],
    ) -> Envelope[Any]:
        nonlocal gap
        if publisher.countdown > 0:  # traced, or not on the hot path: counted, not timed
            env = publish(route, handlers, count, topic, event, key, headers)
            mark(env.topic)
            return env
        dispatch = not threads.state.busy  # else queued behind the current dispatch
        t0 = clock()
        env = publish(route, handlers, count, topic, event, key, headers)
        sample((env.topic, clock() - t0, gap, dispatch))
        gap = publisher.countdown = next(gaps)
        if published.due():
            published.fold()
        return env

    publisher = ObservedPublisher(port.publisher, counted, quick, published.marks, NO_HEADERS)
    return publisher


def _untraced(headers: Mapping[str, str] | None) -> bool:
    return False


async def _timed(metrics: MetricsState, sub: Subscription[Any], arg: Any, coro: Any) -> Any:
    result = await coro
    for env in arg if type(arg) is list else (arg,):
        metrics.handled_now(sub, env)
    return result
