"""The hooks :mod:`tidings.observability` attaches to one bus: the :class:`Observer`.

Nothing here imports OpenTelemetry or prometheus-client: this module holds what runs per
event, which must stay cheap, and the hooks the bus calls.

How an observer reaches a bus, costing an unobserved bus nothing: only through the bus's
one observation seam, :class:`~tidings._ports.ObservationPort` (``tidings.bus.observation_port``):

- **publish and emit**: :meth:`Observer.install` gives the port the hooks that become the
  bus's ``publish`` and ``emit`` (:meth:`ObservationPort.attach
  <tidings._ports.ObservationPort.attach>` swaps the bus's class for a subclass whose two
  methods are the hooks), so :meth:`Bus.publish` itself carries no check. The hook times
  the dispatch (metrics) and, when :meth:`TracingHook.gate` says the event is traced,
  publishes it through ``ObservationPort.publish_each`` with trace headers, so that every
  handler is called through :meth:`Subscription.call`.
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

Latency is observed once per dispatch for inline handlers (publish to the end of the
dispatch, ``perf_counter``: sub-microsecond): every dispatch of ``publish`` is counted
exactly, but only about one in :data:`SAMPLE_EVERY` (or in ``time_every``), at random, is
timed, standing for the dispatches since the last timed one (see :class:`TopicHistograms`);
every ``emit`` and every publish from inside a handler is timed. It is observed once per
handler call for queued, async and remote handlers, from the event's hybrid-clock time
(``time_ns() - envelope.time``: the clock's physical granule makes that up to 65.5 µs long,
and across machines it includes their clock offset). Events delivered from the durable log
(catch-up and durable subscriptions) are counted but not timed: their publish may be long
past.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import random
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from tidings.event import Envelope
from tidings.subscription import INLINE, SKIP, TASK, Subscription

if TYPE_CHECKING:
    from tidings._ports import ObservationPort
    from tidings.results import Delivery

__all__ = (
    "BUCKETS",
    "DELIVERY",
    "SAMPLE_EVERY",
    "DeliveryMark",
    "Histogram",
    "MetricsState",
    "Observer",
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
"""How often, on average, a dispatch of ``publish`` is timed unless told otherwise
(:class:`MetricsState`'s ``time_every``): each is counted, and the gaps between timed ones
are drawn at random from 1 to ``2 * time_every - 1`` (so no periodic traffic is always timed
on the same topic); each timed dispatch stands for its gap. 1 times every dispatch."""
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
    """One latency histogram per topic, for the publish hot path, whose counts are exact but
    whose values may be a sample.

    The hot path marks each observation by appending its topic to :attr:`marks` (one list
    for every topic: ``list.append`` is atomic, takes no lock and looks nothing up); the
    marks are counted into each topic's exact count when a value is given with
    :meth:`observe` and when scraped. Each value is counted in its topic's weighted bucket
    counts, standing for ``weight`` observations. :meth:`snapshot` spreads each topic's
    exact count over its buckets in the proportions of its weighted values (largest
    remainders, so the buckets add up to the count exactly; a topic with no value yet takes
    the proportions of all topics'), and gives the sum as the count times their weighted
    mean. When every value has weight 1, that is exactly the values' histogram. At most
    ``max_topics`` topics; the others count under ``"other"``.
    """

    __slots__ = ("_cells", "_counts", "_lock", "marks", "max_topics")

    OTHER = "other"

    def __init__(self, max_topics: int) -> None:
        self.marks: list[str] = []
        self.max_topics = max_topics
        self._counts: dict[str, int] = {}
        self._cells: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def _name(self, topic: str) -> str:
        """The series ``topic`` is counted in (under the lock): its own, made on first use,
        or ``"other"`` past the cap."""
        if topic in self._cells:
            return topic
        name = self.OTHER if len(self._cells) >= self.max_topics else topic
        if name not in self._cells:
            self._cells[name] = [0] * _CELL
            self._counts[name] = 0
        return name

    def _count_marks(self) -> None:
        """Count the marks made so far into their topics (under the lock)."""
        marks = self.marks
        taken = marks[:]
        del marks[: len(taken)]  # marks appended meanwhile stay, for the next count
        if not taken:
            return
        first = taken[0]
        same = taken.count(first)  # one topic, usually: a scan in C
        tallies = {first: same} if same == len(taken) else collections.Counter(taken)
        for topic, tally in tallies.items():
            self._counts[self._name(topic)] += tally

    def observe(self, topic: str, seconds: float, weight: int = 1) -> None:
        """Count one observation for ``topic``, of ``seconds``, a value standing for
        ``weight`` observations (this one and ``weight - 1`` marked without a value)."""
        with self._lock:
            self._count_marks()
            name = self._name(topic)
            self._counts[name] += 1
            cell = self._cells[name]
            cell[bisect_left(BUCKETS, seconds)] += weight
            cell[-1] += round(seconds * 1e9) * weight

    def snapshot(self) -> dict[str, list[int]]:
        """Per topic, as :meth:`Histogram.snapshot`."""
        with self._lock:
            self._count_marks()
            cells = {name: list(cell) for name, cell in self._cells.items()}
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
        dispatched: per topic, publish (or emit) to the end of its dispatch: the latency of
            the inline handlers and the publish duration.
        deferred: per topic, publishes from inside a handler (queued behind the current
            dispatch): publish duration only.
        handled: per subscription id, latency of queued, async and remote handler calls.
        dead_lettered: per subscription id, events given up on and dead-lettered.
        redelivered: per subscription id, handler calls for a transport's redelivery (a
            subscription that already succeeded, or does not match, is not called again).
        appended, read: store records appended and read (the store's hook).
        publish_failed: events a transport did not publish after ``publish`` returned.
        time_every: a dispatch of ``publish`` is timed about once in this many (see
            :data:`SAMPLE_EVERY`).
    """

    __slots__ = (
        "_lock",
        "appended",
        "dead_lettered",
        "deferred",
        "dispatched",
        "handled",
        "publish_failed",
        "read",
        "redelivered",
        "time_every",
    )

    def __init__(self, max_topics: int, time_every: int = SAMPLE_EVERY) -> None:
        self.dispatched = TopicHistograms(max_topics)
        self.deferred = TopicHistograms(max_topics)
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


class TracingHook(Protocol):
    """What :class:`Observer` needs of :class:`~tidings.observability.Tracing`."""

    def gate(self, headers: Mapping[str, str] | None) -> bool:
        """Whether a publish with ``headers``, made now, is traced."""

    def wrap_publish(
        self,
        original: Callable[..., Envelope[Any]],
        traced: Callable[[Any, str | None, str | None, Mapping[str, str] | None], Envelope[Any]],
        reinstall: Callable[[], None],
    ) -> Callable[..., Envelope[Any]]:
        """A ``publish`` that calls ``traced`` for the events to trace and ``original`` for
        the others, deciding as cheaply as the sampler allows (``original`` itself when
        nothing can be traced). ``reinstall`` rebuilds it when that changes."""

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

    def _publish(self) -> Callable[..., Envelope[Any]] | None:
        """The bus's ``publish`` with the hooks of the parts set, or ``None`` for none."""
        port, tracing, metrics = self.port, self.tracing, self.metrics
        original: Callable[..., Envelope[Any]] = port.publish_unhooked
        publish = original
        if tracing is not None:
            route_of, each = port.route, port.publish_each
            send = tracing.send

            def traced(
                event: Any, topic: str | None, key: str | None, headers: Mapping[str, str] | None
            ) -> Envelope[Any]:
                route = route_of(type(event), topic)
                return send(route.topic, headers, lambda h: each(route, event, key, h))

            publish = tracing.wrap_publish(original, traced, self.install)
        if metrics is not None:
            publish = _timed_publish(port, metrics, publish)
        return None if publish is original else publish

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
                metrics.dispatched.observe(delivery.envelope.topic, time.perf_counter() - t0)
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


def _timed_publish(
    port: ObservationPort, metrics: MetricsState, inner: Callable[..., Envelope[Any]]
) -> Callable[..., Envelope[Any]]:
    """``inner`` (the bus's publish, maybe traced), counted and sampled: every dispatch is
    counted in its topic's exact count, about one in ``metrics.time_every`` is timed (two
    clock reads) and stands for the dispatches since the last timed one.

    The closure holds only what the hot path reads (each of its variables costs every call).
    Threads racing on ``countdown`` change which dispatches are timed, never the counts."""
    threads, clock, dispatched = port.dispatching, time.perf_counter, metrics.dispatched
    mark = dispatched.marks.append
    deferred = functools.partial(_time_into, metrics.deferred, inner)
    next_gap = functools.partial(_gap, 2 * metrics.time_every - 1)
    gap = countdown = 1  # the first dispatch is timed

    def publish(
        event: Any,
        *,
        topic: str | None = None,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope[Any]:
        nonlocal countdown, gap
        if threads.state.busy:  # queued behind the current dispatch
            return deferred(event, topic, key, headers)
        countdown -= 1
        if countdown > 0:
            env = inner(event, topic=topic, key=key, headers=headers)
            mark(env.topic)
            return env
        t0 = clock()
        env = inner(event, topic=topic, key=key, headers=headers)
        dispatched.observe(env.topic, clock() - t0, gap)
        gap = countdown = next_gap()
        return env

    return publish


def _gap(most: int) -> int:
    """Dispatches until the next timed one: 1 to ``most``, at random."""
    return 1 + int(random.random() * most)


def _time_into(
    histograms: TopicHistograms,
    publish: Callable[..., Envelope[Any]],
    event: Any,
    topic: str | None,
    key: str | None,
    headers: Mapping[str, str] | None,
) -> Envelope[Any]:
    """``publish`` the event, its duration counted in ``histograms``."""
    t0 = time.perf_counter()
    env = publish(event, topic=topic, key=key, headers=headers)
    histograms.observe(env.topic, time.perf_counter() - t0)
    return env


async def _timed(metrics: MetricsState, sub: Subscription[Any], arg: Any, coro: Any) -> Any:
    result = await coro
    for env in arg if type(arg) is list else (arg,):
        metrics.handled_now(sub, env)
    return result
