"""The :class:`Bus`: subscribe handlers, publish events, await deliveries, stream events.

Semantics, which the tests hold the bus to:

- **Order.** The handlers of one event run by priority, higher first, ties in subscription
  order. Inline (sync) handlers run in the publisher's thread; async handlers on the bus's
  event loop; queued handlers on their workers, in publish order per ``key``.
- **Re-entrancy.** An event published from inside a handler, on the thread that is
  dispatching, is queued and dispatched after the current event's handlers have all run
  (breadth first), so nested publishing never deadlocks and never deepens the stack.
  :meth:`Bus.emit` dispatches at once (the caller awaits it).
- **Dispatch snapshot.** A dispatch works on the handlers subscribed when it started:
  subscribing or cancelling inside a handler is safe and takes effect for the next event.
- **Errors.** A handler's exception never reaches the publisher nor stops the other
  handlers. It is counted on the subscription, passed to ``on_error`` and published as a
  :class:`~tidings.DeadLetter` on ``tidings.dead_letter``; a failing dead-letter handler is
  logged and nothing more.
- **Backpressure.** A queued subscription's buffer is bounded. When it is full its overflow
  policy decides: ``block`` makes ``publish`` wait (from a thread that may wait) and
  ``emit`` await room; ``drop_oldest``/``drop_newest`` discard and count; ``error`` refuses.
  A refusal (``error``, or ``block`` where waiting would deadlock: on the event loop's
  thread, for consumers that run on that loop, and in a queued handler publishing to its
  own subscription, whose worker would wait for itself) is raised to the publisher as
  :class:`~tidings.QueueFullError` or :class:`~tidings.WouldBlock` after every other
  handler has had the event, and counted as dropped.
- **Async handlers** are started eagerly in the publisher's call when it runs on the bus's
  loop: one that never suspends completes before ``publish`` returns, without a task. From
  another thread they are handed to the loop. Without a running loop they fail with
  :class:`~tidings.LoopNotRunningError` (dead-lettered like any failure).
- **Threads.** ``publish`` is safe from any thread and takes no lock: the handler table of
  each topic is precomputed and replaced, never mutated, when subscriptions change.
- **Routing** (see :mod:`tidings.routing`): a subject trie finds a new topic's handlers in
  O(topic depth); at most ``route_cache_size`` routes are kept (the oldest are evicted), so
  publishing to any number of distinct topics keeps memory flat. Subscribing and cancelling
  change only the routes they match.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import MappingProxyType, MethodType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    overload,
)

from tidings._carrier import Checked, Forwarding, carrier_of
from tidings._coroutines import IDLE, next_job, resume
from tidings._reentry import ThreadDispatch
from tidings._speedups import Publisher
from tidings._stream import EventStream, stream_subscription
from tidings.clock import HybridClock
from tidings.dead_letter import DEAD_LETTER_TOPIC, DeadLetter
from tidings.delivery import Batch, Queued
from tidings.dispatch import ErrorHook, FailureReporter, call_chained, call_counted
from tidings.event import NO_HEADERS, Envelope
from tidings.exceptions import (
    BusClosedError,
    InvalidHandlerError,
    LoopNotRunningError,
    QueueClosedError,
    QueueFullError,
    WouldBlock,
)
from tidings.middleware.base import Middleware
from tidings.observability.logs import log_fields
from tidings.projection import Projection, hlc_bound
from tidings.queues import Overflow
from tidings.recording import Recorder
from tidings.results import CloseReport, Delivery, Failed, HandlerOutcome, lazy_delivery
from tidings.routing import DEFAULT_ROUTE_CACHE_SIZE, Route, RouteTable, subscription_order
from tidings.scheduling import WorkerPool
from tidings.subscription import (
    INLINE,
    QUEUED,
    SKIP,
    TASK,
    TRANSACTIONAL_CALL,
    Mode,
    Subscription,
    SubscriptionStatistics,
    check_arity,
)

if TYPE_CHECKING:
    from types import TracebackType

    from tidings import _fastpath
    from tidings._fastpath import DispatchState
    from tidings._log import AppendBatch, Log
    from tidings._ports import Carrier, EventCheck, ObservationPort
    from tidings._remote import Remote
    from tidings.forwarding import ForwardingStatistics, StoreAndForward
    from tidings.observability._observer import Observer
    from tidings.store.base import EventStore
    from tidings.store.records import Transaction
    from tidings.transports.base import Transport, TransportHealth

__all__ = ("BatchHandles", "Bus", "BusStatistics", "ErrorHook", "Handles", "TransactionalHandles")

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

logger = logging.getLogger("tidings")
_get_ident = threading.get_ident


class Handles(Generic[T]):
    """The decorator returned by :meth:`Bus.on`; it subscribes the function and returns it.

    Type checkers accept a handler whose parameter takes the event (``T``) or its
    envelope (``Envelope[T]``), and reject any other.
    """

    __slots__ = ("_subscribe",)

    def __init__(self, subscribe: Callable[[Callable[..., Any]], Subscription[T]]) -> None:
        self._subscribe = subscribe

    @overload
    def __call__(self, handler: Callable[[Envelope[T]], R], /) -> Callable[[Envelope[T]], R]: ...
    @overload
    def __call__(self, handler: Callable[[T], R], /) -> Callable[[T], R]: ...
    def __call__(self, handler: Callable[..., R], /) -> Callable[..., R]:
        self._subscribe(handler)
        return handler


class BatchHandles(Generic[T]):
    """The decorator returned by :meth:`Bus.on` with ``batch=``: the handler takes a list of
    events (``list[T]``) or of envelopes (``list[Envelope[T]]``)."""

    __slots__ = ("_subscribe",)

    def __init__(self, subscribe: Callable[[Callable[..., Any]], Subscription[T]]) -> None:
        self._subscribe = subscribe

    @overload
    def __call__(
        self, handler: Callable[[list[Envelope[T]]], R], /
    ) -> Callable[[list[Envelope[T]]], R]: ...
    @overload
    def __call__(self, handler: Callable[[list[T]], R], /) -> Callable[[list[T]], R]: ...
    def __call__(self, handler: Callable[..., R], /) -> Callable[..., R]:
        self._subscribe(handler)
        return handler


class TransactionalHandles(Protocol[T]):
    """The decorator returned by :meth:`Bus.on` with ``transactional=True``: the handler
    takes the event (``T``) or its envelope, and the :class:`~tidings.Transaction`."""

    @overload
    def __call__(
        self, handler: Callable[[Envelope[T], Transaction], R], /
    ) -> Callable[[Envelope[T], Transaction], R]: ...
    @overload
    def __call__(
        self, handler: Callable[[T, Transaction], R], /
    ) -> Callable[[T, Transaction], R]: ...


class LogFollowOptions(TypedDict, total=False):
    """The options of :meth:`Bus.subscribe` and :meth:`Bus.on` that do not depend on the
    event type, shared by every form (a transactional subscription takes only these); see
    :meth:`Bus.subscribe` for what each means and its default. Declared once, here: the
    overloads spell out only ``where`` (typed by the event), ``batch`` and
    ``transactional`` (which pick the form), and ``durable`` where it is required."""

    priority: float
    owner: object | None
    envelope: bool | None
    from_: int | None
    idempotent: bool
    max_attempts: int


class SubscribeOptions(LogFollowOptions, total=False):
    """The options of the ordinary (not transactional) forms of :meth:`Bus.subscribe` and
    :meth:`Bus.on`, besides ``where``, ``batch`` and ``transactional``."""

    once: bool
    weak: bool | None
    mode: Mode | None
    workers: int
    maxsize: int
    overflow: Overflow
    pool: WorkerPool | None
    weight: float
    group: str | None
    durable: str | None
    middleware: Sequence[Middleware]


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """A snapshot of every subscription's counters (:meth:`Bus.statistics`).

    Attributes:
        subscriptions: one record per active subscription, in dispatch order.
        forwarding: store and forward's counters, on a bus made with ``forward=``.
        transport: the transport's connection state, on a bus made with ``transport=``.
    """

    subscriptions: tuple[SubscriptionStatistics, ...]
    forwarding: ForwardingStatistics | None = None
    transport: TransportHealth | None = None

    @property
    def delivered(self) -> int:
        """Handler calls that succeeded, over all subscriptions."""
        return sum(s.delivered for s in self.subscriptions)

    @property
    def failed(self) -> int:
        """Handler calls that raised, over all subscriptions."""
        return sum(s.failed for s in self.subscriptions)

    @property
    def dropped(self) -> int:
        """Events discarded or refused by overflow policies, over all subscriptions."""
        return sum(s.dropped for s in self.subscriptions)


class Bus:
    """A typed event bus. See the module docstring for its guarantees.

    Args:
        source: the CloudEvents ``source`` stamped on every envelope.
        clock: the hybrid logical clock stamping envelopes; one per bus by default.
        on_error: called as ``on_error(envelope, subscription, exception)`` for every
            handler failure; its own errors are logged.
        transport: carry events between processes (see :mod:`tidings._remote`): every
            publish goes to the server and subscriptions become transport subscriptions.
            The transport shares the bus's clock. Use ``async with Bus(transport=...)``.
        store: keep every published event in this durable log before dispatching it
            (write-ahead; see :mod:`tidings._log`), for :meth:`replay`, projections and
            log-following subscriptions (``from_=``, ``durable=``). A store URL
            (``sqlite:///path``, ``postgresql://...``, ``memory://``) opens one. The bus owns
            the store: :meth:`aclose` closes it.
        route_cache_size: how many routes (the handler tables of a topic and event class)
            the bus keeps, 4096 by default. A topic whose route was evicted costs one trie
            walk (microseconds) at its next publish; memory stays bounded by this however
            many distinct topics are published.
        forward: with a store and a transport, store and forward
            (:class:`~tidings.forwarding.StoreAndForward`): publishes are accepted into the
            log while the broker is unreachable and forwarded in order, idempotently, once
            it is back.
        validator: check every event published or emitted against its topic's contract
            (for example a :class:`tidings.contracts.Validator`), in every mode (memory,
            store, transport): an event it refuses raises
            :class:`~tidings.contracts.SchemaViolationError` to the publisher before
            anything is appended, sent or dispatched. Without one, publishing costs nothing
            more.

    A bus needs no event loop for sync handlers. ``async with Bus() as bus`` (or
    ``await bus.start()``) binds it to the running loop for async handlers and async
    workers; publishing or emitting from inside a running loop binds it too.
    """

    # Slots, not an instance dict: publish reads a dozen of these per event, and a slot read
    # is the cheapest attribute read there is (an instance dict of this many keys is not).
    __slots__ = (
        "__weakref__",
        "_carrier",
        "_carries",
        "_carry",
        "_clock",
        "_closed",
        "_driver",
        "_driver_alive",
        "_emit_alive",
        "_emit_driver",
        "_failures",
        "_forwarding",
        "_gone",
        "_handoffs",
        "_lock",
        "_log",
        "_loop",
        "_loop_thread",
        "_middleware",
        "_observer",
        "_pools",
        "_port",
        "_publisher",
        "_queued",
        "_remote",
        "_routes",
        "_source",
        "_stamper",
        "_table",
        "_tasks",
        "_threads",
        "_topic_routes",
    )

    def __init__(
        self,
        *,
        source: str = "tidings",
        clock: HybridClock | None = None,
        on_error: ErrorHook | None = None,
        transport: Transport | None = None,
        store: EventStore | str | None = None,
        route_cache_size: int = DEFAULT_ROUTE_CACHE_SIZE,
        forward: StoreAndForward | None = None,
        validator: EventCheck | None = None,
    ) -> None:
        self._table = RouteTable(route_cache_size)
        self._source = source
        self._clock = clock if clock is not None else HybridClock()
        self._lock = threading.Lock()
        # The route cache, read by publish without a lock: the table's own dicts (mutated by
        # the table only, never replaced).
        self._routes = self._table.by_type
        self._topic_routes = self._table.by_topic
        # Subscriptions whose owner was collected: their removal waits for ordinary code
        # (see _release).
        self._gone: deque[Subscription[Any]] = deque()
        # Whether each thread is dispatching, and the events its handlers published meanwhile.
        self._threads = ThreadDispatch()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handoffs = 0
        self._queued: list[Queued] = []
        self._pools: set[WorkerPool] = set()
        self._driver: Coroutine[Any, Any, None] | None = None
        self._driver_alive: list[bool] = []
        self._emit_driver: Coroutine[Any, Any, None] | None = None  # see _emit_eagerly
        self._emit_alive: list[bool] = []
        self._remote: Remote | None = None
        self._observer: Observer | None = None  # tidings.observability; read off the hot path
        self._middleware: tuple[Middleware, ...] = ()  # bus-wide, outermost (see use())
        self._port = _BusPort(self)  # what the parts see of the bus (tidings._ports)
        if transport is not None:
            from tidings._remote import Remote

            self._remote = Remote(self._port, transport, self._clock)
        self._log: Log | None = None
        if store is not None:
            from tidings._log import Log
            from tidings.store.url import open_store

            self._log = Log(self._port, open_store(store) if isinstance(store, str) else store)
        self._failures = FailureReporter(
            on_error=on_error,
            observer=lambda: self._observer,
            dead_letter_route=lambda: self._route(DeadLetter, None),
            publish_dead_letter=self._publish_dead_letter,
            stored_remotely=self._remote is not None,
        )
        # What carries published events beyond the process (tidings._ports.Carrier): the
        # log, the remote side or both. The parts are reached directly only to follow the
        # log or subscribe remotely; publishing, starting and closing go through it.
        self._carrier: Carrier | None = carrier_of(self._log, self._remote, forward)
        self._forwarding = self._carrier if isinstance(self._carrier, Forwarding) else None
        if validator is not None:  # checked before the carrier (or the dispatch): Checked
            self._carrier = Checked(validator, self._carrier)
        # The hot path: stamp, envelope and plain sync handlers in one call (tidings._fastpath,
        # compiled by mypyc when the install could: tidings._speedups). An observed bus
        # publishes through an ObservedPublisher wrapping it (ObservationPort.attach); the
        # bus's own stamps (_envelope) always take this one.
        self._stamper = Publisher(
            self._clock._state,
            self._clock._wall,
            self._clock.now,
            Envelope,
            source,
            self._clock.node,
            self._threads,
            self._failures.report_plain,
            self._drain,
            self._drop,
        )
        self._publisher: _fastpath.Publisher | _fastpath.ObservedPublisher = self._stamper
        # Whether publish hands events to a store or a transport: one test on the hot path,
        # then one call, straight to the carrier's write_ahead (see _carry).
        self._carries = self._carrier is not None
        if self._carrier is not None:
            self._carry = self._carrier.write_ahead

    # ------------------------------------------------------------------ subscribing

    @overload
    def subscribe(
        self,
        target: type[T],
        handler: Callable[[T], object] | Callable[[Envelope[T]], object],
        *,
        where: Callable[[T], bool] | None = None,
        batch: None = None,
        transactional: Literal[False] = False,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription[T]: ...
    @overload
    def subscribe(
        self,
        target: type[T],
        handler: Callable[[list[T]], object] | Callable[[list[Envelope[T]]], object],
        *,
        where: Callable[[T], bool] | None = None,
        batch: Batch,
        transactional: Literal[False] = False,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription[T]: ...
    @overload
    def subscribe(
        self,
        target: str,
        handler: Callable[[Any], object],
        *,
        where: Callable[[Any], bool] | None = None,
        batch: Batch | None = None,
        transactional: Literal[False] = False,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription[Any]: ...
    @overload
    def subscribe(
        self,
        target: type[T],
        handler: Callable[[T, Transaction], object] | Callable[[Envelope[T], Transaction], object],
        *,
        where: Callable[[T], bool] | None = None,
        durable: str,
        transactional: Literal[True],
        **options: Unpack[LogFollowOptions],
    ) -> Subscription[T]: ...
    @overload
    def subscribe(
        self,
        target: str,
        handler: Callable[[Any, Transaction], object],
        *,
        where: Callable[[Any], bool] | None = None,
        durable: str,
        transactional: Literal[True],
        **options: Unpack[LogFollowOptions],
    ) -> Subscription[Any]: ...
    def subscribe(
        self, target: type[T] | str, handler: Callable[..., object], **options: Any
    ) -> Subscription[Any]:
        """Subscribe ``handler`` to an event class, a topic or a pattern.

        Args:
            target: an event class (instances of it and its subclasses published on its
                topic), a topic, or a pattern with ``*`` and ``>`` wildcards.
            handler: a function, coroutine function or callable. It receives the payload,
                or the :class:`~tidings.Envelope` when its first parameter is annotated
                ``Envelope[...]`` (or ``envelope=True`` is passed); with ``batch`` it
                receives a list of them.
            priority: an int or float; higher runs first, equal priorities in subscription
                order.
            where: a predicate on the payload; the handler sees only events it accepts.
            once: end the subscription after the first accepted event.
            weak: hold the handler weakly; by default bound methods are held weakly and
                everything else strongly.
            owner: end the subscription when this object is garbage-collected.
            envelope: force (``True``) or refuse (``False``) envelope delivery.
            mode: ``"inline"``, ``"task"`` or ``"queued"`` (see :mod:`tidings.subscription`);
                ``workers > 1``, ``batch`` or ``pool`` imply ``"queued"``.
            workers: queued mode: worker threads (sync handler) or tasks (coroutine
                function); events with one key stay in publish order.
            maxsize: queued mode: how many events the buffer holds (in total, split
                between the workers' partitions; at least ``workers``).
            overflow: queued mode: what a full buffer does (``block``, ``drop_oldest``,
                ``drop_newest``, ``error``).
            batch: queued mode: hand the handler lists of events, as this says.
            pool: queued mode: share this pool's workers, served by ``weight``.
            weight: the subscription's share of its pool.
            group: with a transport, share the events with the same group's subscriptions
                in every process (competing consumers); without it every process gets every
                event. Ignored without a transport (one process is its own group).
            from_: follow the store's log from after this position (0: the beginning):
                history first, then live events, no gap and no duplicate at the seam.
            durable: follow the log as the durable consumer of this name: start after its
                checkpoint (or ``from_``, default 0, the first time) and commit each
                handled position, so a restart resumes there (at least once).
            idempotent: with ``durable``, record handled event ids with the checkpoint and
                skip records already handled (effectively once). On a bus with a transport
                and a store: record each handled event id in the store under the consumer
                name ``durable`` (default: the group, else the handler's name) and skip
                redelivered events already recorded, in any process sharing the store.
            max_attempts: log followers retry a failing handler this many times (with
                exponential backoff) before dead-lettering the event and moving on.
            transactional: with ``durable`` on a store with transactions (SQLite,
                PostgreSQL): call ``handler(event, transaction)`` inside the transaction
                that commits the checkpoint, so the effect it writes through
                ``transaction.connection`` (a :class:`~tidings.Transaction`) commits with
                the checkpoint or not at all: exactly once in effect, through crashes.
                On SQLite the handler must not suspend inside the transaction.
            middleware: wrap the handler in these (see :mod:`tidings.middleware`), the first
                listed outermost, inside the bus-wide ones of :meth:`use`. Composed once,
                here. Not for batch handlers.

        Every option is keyword-only and optional; the defaults are those of
        :class:`SubscribeOptions` as documented here (``priority=0``, ``workers=1``,
        ``maxsize=1024``, ``overflow="block"``, ``weight=1.0``, ``max_attempts=3``, the
        rest off).

        Returns:
            The :class:`Subscription` handle.

        Raises:
            InvalidHandlerError: if the handler, ``where``, ``owner``, ``mode``, ``priority``
                (not an int or float), ``batch`` (not a :class:`~tidings.Batch`) or
                ``middleware`` (with ``batch``, or one refusing the handler) is unusable.
                Every option is checked before any worker starts.
            InvalidTopicError: if the topic or pattern is malformed.
            TopicRequiredError: if the event class is a builtin that names no topic.
            ValueError: if a queue setting is out of range.
            TypeError: if an option is unknown.
            BusClosedError: if the bus is closed.
        """
        if options or self._remote is not None:
            return self._subscribe(target, handler, **options)
        # No option, no transport: the common case, without the option checks (every option
        # at its default selects a local inline or task subscription, never queued).
        if self._closed:
            raise BusClosedError("the bus is closed; subscribe before closing it")
        sub: Subscription[Any] = Subscription(
            self._port, target, handler, 0, None, False, None, None, None, None, self._middleware
        )
        if self._observer is not None:
            sub.observe(True)
        if self._gone:
            self._remove_gone()
        self._table.add(sub)
        return sub

    def _subscribe(
        self,
        target: type[T] | str,
        handler: Callable[..., object],
        *,
        priority: float = 0,
        where: Callable[[Any], bool] | None = None,
        once: bool = False,
        weak: bool | None = None,
        owner: object | None = None,
        envelope: bool | None = None,
        mode: Mode | None = None,
        workers: int = 1,
        maxsize: int = 1024,
        overflow: Overflow = "block",
        batch: Batch | None = None,
        pool: WorkerPool | None = None,
        weight: float = 1.0,
        group: str | None = None,
        from_: int | None = None,
        durable: str | None = None,
        idempotent: bool = False,
        max_attempts: int = 3,
        transactional: bool = False,
        middleware: Sequence[Middleware] = (),
    ) -> Subscription[Any]:
        """:meth:`subscribe` with options (see there)."""
        if self._closed:
            raise BusClosedError("the bus is closed; subscribe before closing it")
        if mode is None and (workers != 1 or batch is not None or pool is not None):
            mode = "queued"
        carried = self._remote is not None and group is not _LOCAL
        follows = not carried and (from_ is not None or durable is not None)
        if transactional and not follows:
            raise InvalidHandlerError(
                "transactional=True needs durable='consumer-name' on a bus with a store "
                "(Bus(store=...)): the handler joins the transaction of the log's checkpoint"
            )
        if follows:
            self._check_follow(from_, durable, idempotent, max_attempts, mode)
            if transactional:
                handler = self._transactional(handler, durable, batch)
        elif carried and (from_ is not None or (idempotent and self._log is None)):
            raise InvalidHandlerError(
                "on a bus with a transport, events come from the server: from_= is not "
                "available, and idempotent=True needs Bus(transport=..., store=...) to "
                "record what was handled"
            )
        elif idempotent and not carried:
            raise InvalidHandlerError("idempotent=True needs durable='consumer-name'")
        if batch is not None and middleware:
            raise InvalidHandlerError(
                "middleware= wraps handlers of one event; a batch handler takes lists, so "
                "it takes no middleware (wrap the per-event work inside it instead)"
            )
        if self._middleware and batch is None and group is not _LOCAL:
            middleware = (*self._middleware, *middleware)
        sub: Subscription[Any] = Subscription(
            self._port,
            target,
            handler,
            priority=priority,
            where=where,
            once=once,
            weak=weak,
            owner=owner,
            envelope=envelope,
            mode=mode,
            middleware=middleware,
        )
        if sub.kind != QUEUED and (maxsize != 1024 or overflow != "block" or weight != 1):
            instead = (
                "the transport's DeliveryPolicy(prefetch=, workers=) bounds what it holds"
                if carried
                else "pass mode='queued' (or workers=, batch=, pool=) to buffer its events"
            )
            raise InvalidHandlerError(
                f"maxsize=, overflow= and weight= shape a queued subscription's buffer, but "
                f"{sub.name} is delivered {sub.mode}: {instead}, or drop those options"
            )
        if self._observer is not None and group is not _LOCAL:
            sub.observe(True)
        if follows:
            assert self._log is not None
            self._log.follow(
                sub,
                start=from_ or 0,
                durable=durable,
                idempotent=idempotent,
                max_attempts=max_attempts,
                transactional=transactional,
            )
            return sub
        remote = self._remote
        if remote is not None and group is not _LOCAL and sub.pattern != DEAD_LETTER_TOPIC:
            if sub.kind == QUEUED:
                raise ValueError(
                    "queued subscriptions are not carried by a transport yet; the transport's "
                    "DeliveryPolicy(workers=..., prefetch=...) sets its concurrency"
                )
            dedupe = (durable or group or sub.name) if idempotent else None
            remote.subscribe(sub, group, dedupe=dedupe)
            return sub
        if sub.kind == QUEUED:
            if not weight > 0:
                raise ValueError(f"weight must be positive, not {weight!r}")
            sub.queued = Queued(
                sub,
                workers=workers,
                maxsize=maxsize,
                overflow=overflow,
                batch=batch,
                pool=pool,
                weight=weight,
                on_failure=self._failures.report,
                on_drained=self._forget_queued,
            )
        self._register(sub)
        return sub

    def use(self, *middleware: Middleware) -> None:
        """Wrap every handler subscribed from now on in ``middleware`` (bus-wide).

        Bus-wide middleware is outermost: ``use(x)`` then ``subscribe(h, middleware=[a])``
        calls ``x(a(h))``; several ``use`` calls append, inner to the earlier ones
        (see :mod:`tidings.middleware`). It applies to subscriptions made after this call,
        not to earlier ones, so a running subscription's chain (and any state in it, such
        as a circuit breaker's) never changes under it. Batch handlers, streams and
        :meth:`record` take no middleware. A middleware object passed here is shared by
        every subscription it wraps (one :class:`~tidings.middleware.CircuitBreaker` then
        guards them all); pass one per subscription to ``subscribe`` for separate state.

        Raises:
            InvalidHandlerError: if an item is not callable.
            BusClosedError: if the bus is closed.
        """
        if self._closed:
            raise BusClosedError("the bus is closed; add middleware before closing it")
        for mw in middleware:
            if not callable(mw):
                raise InvalidHandlerError(
                    f"use() takes middleware (callables mapping a handler to a handler), "
                    f"not {type(mw).__name__} {mw!r}"
                )
        self._middleware = (*self._middleware, *middleware)

    def _check_follow(
        self,
        from_: int | None,
        durable: str | None,
        idempotent: bool,
        max_attempts: int,
        mode: Mode | None,
    ) -> None:
        if self._log is None:
            raise InvalidHandlerError(
                "from_= and durable= follow the durable log: create the bus with "
                "Bus(store=...) (for example store='sqlite:///events.db')"
            )
        if from_ is not None and (not isinstance(from_, int) or from_ < 0):
            raise ValueError(f"from_ is a log position >= 0 (0: the beginning), not {from_!r}")
        if durable is not None and (not isinstance(durable, str) or not durable.strip()):
            raise ValueError(f"durable is a non-empty consumer name, not {durable!r}")
        if idempotent and durable is None:
            raise InvalidHandlerError("idempotent=True needs durable='consumer-name'")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive int, not {max_attempts!r}")
        if mode == "queued":
            raise InvalidHandlerError(
                "log-following subscriptions deliver in log order from their own task; "
                "they cannot also be queued"
            )

    def _transactional(
        self, handler: Callable[..., object], durable: str | None, batch: Batch | None
    ) -> Callable[..., object]:
        """``handler`` taking ``(event, transaction)``, made a one-argument log handler."""
        from tidings._log import with_transaction

        assert self._log is not None
        store = self._log.store
        if durable is None or batch is not None or not store.features.transactions:
            raise InvalidHandlerError(
                "transactional=True runs one event's handler in the transaction of a durable "
                "consumer's checkpoint: it needs durable='consumer-name', no batch=, and a "
                f"store with transactions (SQLiteStore or PostgresStore, not {store!r})"
            )
        if not callable(handler):
            raise InvalidHandlerError(f"handler must be callable, not {handler!r}")
        check_arity(handler, 2, TRANSACTIONAL_CALL)
        return with_transaction(handler)

    def _register(self, sub: Subscription[Any]) -> None:
        self._remove_gone()
        queued = sub.queued
        if queued is not None:
            queued.start(self._loop)
            with self._lock:
                self._queued.append(queued)
                if queued.pool is not None:
                    self._pools.add(queued.pool)
        self._table.add(sub)

    @overload
    def on(
        self,
        target: type[T],
        *,
        where: Callable[[T], bool] | None = None,
        batch: None = None,
        transactional: Literal[False] = False,
        **options: Unpack[SubscribeOptions],
    ) -> Handles[T]: ...
    @overload
    def on(
        self,
        target: type[T],
        *,
        where: Callable[[T], bool] | None = None,
        batch: Batch,
        transactional: Literal[False] = False,
        **options: Unpack[SubscribeOptions],
    ) -> BatchHandles[T]: ...
    @overload
    def on(
        self,
        target: str,
        *,
        where: Callable[[Any], bool] | None = None,
        batch: Batch | None = None,
        transactional: Literal[False] = False,
        **options: Unpack[SubscribeOptions],
    ) -> Handles[Any]: ...
    @overload
    def on(
        self,
        target: type[T],
        *,
        where: Callable[[T], bool] | None = None,
        durable: str,
        transactional: Literal[True],
        **options: Unpack[LogFollowOptions],
    ) -> TransactionalHandles[T]: ...
    @overload
    def on(
        self,
        target: str,
        *,
        where: Callable[[Any], bool] | None = None,
        durable: str,
        transactional: Literal[True],
        **options: Unpack[LogFollowOptions],
    ) -> TransactionalHandles[Any]: ...
    def on(
        self,
        target: type[T] | str,
        *,
        batch: Batch | None = None,
        **options: Any,
    ) -> Handles[Any] | BatchHandles[Any] | TransactionalHandles[Any]:
        """Decorator form of :meth:`subscribe` (same options); returns the function unchanged.

        The :class:`Subscription` is listed by :meth:`subscriptions`; to cancel one later,
        use :meth:`subscribe` and keep its handle.
        """

        if batch is not None:
            options["batch"] = batch

        def subscribe(handler: Callable[..., Any]) -> Subscription[Any]:
            sub: Subscription[Any] = self.subscribe(target, handler, **options)
            return sub

        return Handles(subscribe) if batch is None else BatchHandles(subscribe)

    def _unsubscribe(self, sub: Subscription[Any], *, close: bool = True) -> None:
        """Remove ``sub`` from the routes; ``close``: close its buffer too (queued)."""
        self._remove_gone()
        self._remove(sub, close)

    def _release(self, sub: Subscription[Any]) -> None:
        """End ``sub`` from a weakref callback (its owner was collected), taking no lock.

        The callback may run inside code of this thread that holds the bus's lock (or the
        route table's, or the counters'), so nothing here waits for a lock: the route cache
        is emptied without one (:meth:`RouteTable.release`), and ``sub`` stays in the table
        until :meth:`_remove_gone` removes it. Routes built meanwhile skip it (inactive).
        """
        self._gone.append(sub)
        self._table.release(sub)

    def _remove_gone(self) -> None:
        """Finish the removals :meth:`_release` left: at each subscribe, cancel, route
        rebuild and listing of subscriptions."""
        gone = self._gone
        while gone:
            try:
                sub = gone.popleft()
            except IndexError:  # another thread took the last one
                return
            self._remove(sub, True)

    def _remove(self, sub: Subscription[Any], close: bool) -> None:
        if self._remote is not None and self._remote.unsubscribe(sub):
            return
        if self._log is not None and self._log.unfollow(sub):
            return
        self._table.remove(sub)
        if close and sub.queued is not None:
            sub.queued.close()

    def _forget_queued(self, queued: Queued) -> None:
        """Stop tracking a queued subscription that was closed and has drained (or a stream
        that ended): :meth:`aclose` has nothing left to wait for or report there."""
        with self._lock:
            if queued in self._queued:
                self._queued.remove(queued)

    @property
    def _subs(self) -> tuple[Subscription[Any], ...]:
        """The local subscriptions, in subscription order (no lock taken)."""
        return self._table.subscriptions()

    def subscriptions(self) -> tuple[Subscription[Any], ...]:
        """The active subscriptions, in dispatch order (priority, then age)."""
        self._remove_gone()
        subs = self._table.subscriptions()
        if self._remote is not None:
            subs = (*subs, *self._remote.subscriptions())
        return tuple(sorted(subs, key=subscription_order))

    def statistics(self) -> BusStatistics:
        """Every active subscription's counters: delivered, failed, dropped, queue depth and
        high-water mark; store and forward's counters and the transport's health."""
        self._remove_gone()
        subs = sorted(self._table.subscriptions(), key=subscription_order)
        forwarding = self._forwarding.statistics() if self._forwarding is not None else None
        remote = self._remote
        health = None if remote is None else remote.transport.health()
        return BusStatistics(tuple(s.statistics() for s in subs), forwarding, health)

    # ------------------------------------------------------------------ routing

    def _route(self, event_type: type, topic: str | None) -> Route:
        if self._gone:
            self._remove_gone()
        return self._table.route(event_type, topic)

    def _envelope(
        self, route: Route, event: T, key: str | None, headers: Mapping[str, str] | None
    ) -> Envelope[T]:
        if key is not None and not isinstance(key, str):
            raise _bad_key(key)
        env: Envelope[T] = self._stamper.publish_plain(  # stamped only: no handlers
            route,
            None,
            route.count,
            route.topic,
            event,
            key,
            NO_HEADERS if headers is None else _copy_headers(headers),
        )
        return env

    # ------------------------------------------------------------------ publishing

    def _publish_on(
        self, route: Route, event: T, key: str | None, headers: Mapping[str, str] | None
    ) -> Envelope[T]:
        """:meth:`publish` through ``route``, already looked up, not through the observed
        hot path: how :mod:`tidings.observability` publishes what an observed bus's
        :class:`~tidings._speedups.ObservedPublisher` hands it
        (``ObservationPort.publish_routed``; with ``route.slow()``, ``publish_each``: every
        handler called through :meth:`Subscription.call`, for the events it traces)."""
        if self._closed:
            raise BusClosedError("the bus is closed; it accepts no more events")
        env = self._envelope(route, event, key, headers)
        if self._carries and not self._carry(route, env):
            return env  # appended, then dispatched, by a task on the loop
        if route.subs:
            self._deliver(route, env)
        return env

    def publish(
        self,
        event: T,
        *,
        topic: str | None = None,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope[T]:
        """Publish ``event`` and dispatch it to every matching handler.

        Inline handlers have run when this returns (unless it was called from inside a
        handler: then the event is queued behind the current one); async handlers have run
        up to their first suspension when called on the bus's loop; queued subscriptions
        hold the event in their buffers. Thread-safe; takes no lock.

        Args:
            event: the event; its class names its topic unless ``topic`` is given.
            topic: publish on this topic instead of the class's.
            key: ordering key: queued and remote deliveries keep order per key.
            headers: string metadata carried with the event (str names to str values).

        Returns:
            The :class:`~tidings.Envelope` that was dispatched.

        Raises:
            TopicRequiredError: if ``event`` is a builtin value and no ``topic`` is given.
            InvalidTopicError: if ``topic`` is malformed.
            TypeError: if ``key`` is not a str (or None), or ``headers`` not a mapping of str
                to str; nothing was published.
            BusClosedError: if the bus is closed.
            SchemaViolationError: the bus's ``validator`` refused the event; nothing was
                appended, sent or dispatched.
            QueueFullError: a queued subscription with ``overflow="error"`` was full (every
                other handler still got the event).
            WouldBlock: a full ``block`` subscription whose consumers run on this thread's
                event loop could not be waited for here (use ``await bus.emit(...)``), or
                this is a queued handler's worker publishing to its own full subscription.
        """
        route: Route | None
        if topic is None:
            try:  # a subscript, not .get(): no method call on a hit
                route = self._routes[type(event)]
            except KeyError:
                route = self._route(type(event), None)
        else:
            try:
                route = self._topic_routes.get((topic, type(event)))
            except TypeError:  # an unhashable topic: build() says what is wrong with it
                route = None
            if route is None:  # a new topic: built without looking it up again
                if self._gone:
                    self._remove_gone()
                route = self._table.build(type(event), topic)
        if self._closed:
            raise BusClosedError("the bus is closed; it accepts no more events")
        if key is not None and not isinstance(key, str):
            raise _bad_key(key)
        # The hot path (tidings._fastpath): given a route's plain handlers, publish_plain also
        # dispatches; given None (a carrier, or handlers that are not all plain), it stamps.
        # An observed bus's (ObservedPublisher) hands what it does not finish to its observer.
        fast = None if self._carries else route.fast
        publisher = self._publisher  # read once: an observer may come or go meanwhile
        env: Envelope[T] = publisher.publish_plain(
            route,
            fast,
            route.count,
            route.topic,
            event,
            key,
            NO_HEADERS if headers is None else _copy_headers(headers),
        )
        if fast is not None:
            return env
        if publisher is not self._stamper:
            return env  # observed: published, whole, by the observer's hook
        if self._carries and not self._carry(route, env):
            return env  # appended, then dispatched, by a task on the loop
        if not route.subs:
            return env
        chained, fast_async = route.chained, route.fast_async
        if chained is None and (fast_async is None or _get_ident() != self._loop_thread):
            self._deliver(route, env)  # the general walk, and its queues' refusals
            return env
        # Plain coroutine handlers on the loop's thread, or inline ones behind middleware:
        # _deliver's steps, inlined (neither offers to a buffer, so neither is refused).
        state = self._threads.state  # this thread's (tidings._reentry)
        if state.busy:  # published by a handler: dispatched after the current event
            state.queue.append((route, env))
            return env
        state.busy = True
        try:
            if chained is not None:
                call_chained(chained, env, self._failures.report)
            else:
                assert fast_async is not None
                next(route.count)
                self._run_async(route, fast_async, env)
            if state.queue:
                self._drain(state.queue)
        except BaseException as exc:  # an interrupt: what was queued is dropped
            self._drop(state.queue, exc)
            raise
        finally:
            state.busy = False
        return env

    _carry: Callable[[Route, Envelope[Any]], bool]
    """The carrier's ``write_ahead`` (set when the bus has one: ``_carries``): append a
    published envelope to the store and send it over the transport; whether to dispatch it
    now: not when its append was deferred to a task, which dispatches it after (see
    :meth:`_after_write_ahead`)."""

    def _after_write_ahead(self, route: Route, env: Envelope[Any]) -> None:
        """Send and dispatch an envelope whose append was deferred to a task."""
        assert self._carrier is not None
        self._carrier.send(env)
        if not route.subs:  # as publish: no subscriber, nothing to dispatch
            return
        try:
            self._deliver(route, env)
        except (QueueFullError, WouldBlock):
            logger.exception("event %s was refused by a full queue after its append", env.id)

    def _deliver(self, route: Route, env: Envelope[Any]) -> None:
        """Dispatch now, then what the handlers published (breadth first), or, when called
        from inside a dispatch of this thread, queue it behind that one."""
        state = self._threads.state
        if state.busy:
            state.queue.append((route, env))
            return
        state.busy = True
        refusal: Exception | None = None
        try:
            try:
                self._dispatch(route, env)
            except (QueueFullError, WouldBlock) as exc:
                refusal = exc  # every other handler ran: raised after the drain
            if state.queue or refusal is not None:
                self._drain_then_raise(state.queue, refusal)
        except BaseException as exc:  # an interrupt: what was queued is dropped
            self._drop(state.queue, exc)
            raise
        finally:
            state.busy = False

    def _drain(self, queue: deque[tuple[Route, Envelope[Any]]]) -> None:
        """Dispatch what this thread's handlers published (its :class:`DispatchState`'s
        ``queue``), breadth first, until none is left; what an escaping exception (an
        interrupt) leaves is dropped and reported (:meth:`_drop`)."""
        refusals: list[Exception] = []
        env: Envelope[Any] | None = None  # the one being dispatched
        try:
            while queue:
                route, env = queue.popleft()
                try:
                    self._dispatch(route, env)
                except (QueueFullError, WouldBlock) as exc:
                    refusals.append(exc)  # a nested publish's refusal goes to the outer caller
                env = None
        except BaseException as exc:
            self._drop(queue, exc, env)
            raise
        if refusals:
            raise refusals[0]

    def _drain_then_raise(
        self, queue: deque[tuple[Route, Envelope[Any]]], refusal: Exception | None
    ) -> None:
        """:meth:`_drain`, then raise ``refusal`` (a queued subscription's refusal of the
        dispatched event itself, which comes before any of the drain's) if there is one:
        what the event's other handlers published is dispatched as when none refused."""
        try:
            self._drain(queue)
        except (QueueFullError, WouldBlock):
            if refusal is None:
                raise
        if refusal is not None:
            raise refusal

    def _drop(
        self,
        queue: deque[tuple[Route, Envelope[Any]]],
        exc: BaseException,
        during: Envelope[Any] | None = None,
    ) -> None:
        """Empty this thread's queue when ``exc`` (a ``KeyboardInterrupt``, a cancellation,
        any exception that is not a handler's reported failure) ends the dispatch that owns
        it: what its handlers published is never dispatched later, by an unrelated publish
        on this thread, as if nothing had happened; it is counted as dropped and logged
        (:meth:`FailureReporter.interrupted`, which also names ``during``, a queued event
        whose dispatch ``exc`` interrupted) while ``exc`` goes on. Nothing to do when the
        queue is empty and ``during`` is None."""
        if not queue and during is None:
            return
        entries = list(queue)
        queue.clear()
        self._failures.interrupted(entries, exc, during)

    def _dispatch(self, route: Route, env: Envelope[Any]) -> None:
        fast = route.fast
        if fast is not None:
            next(route.count)
            payload = env.payload
            for handler in fast:
                try:
                    handler(payload)
                except Exception as exc:
                    self._failures.report_plain(route, handler, env, exc)
            return
        chained = route.chained
        if chained is not None:
            call_chained(chained, env, self._failures.report)
            return
        on_loop = self._loop_thread == _get_ident() or self._bind_running_loop()
        fast_async = route.fast_async
        if fast_async is not None and on_loop:
            next(route.count)
            self._run_async(route, fast_async, env)
            return
        self._dispatch_each(route.subs, env, on_loop)

    def _run_async(self, route: Route, handlers: tuple[Any, ...], env: Envelope[Any]) -> None:
        """Start plain coroutine handlers eagerly, on the loop's thread.

        A long-lived driver coroutine (:func:`_drive_handlers`) awaits the handlers in turn
        and then waits for its next job, so a handler that returns without suspending costs
        one ``await``: no task, no ``StopIteration``. When a handler suspends, the driver is
        retired after that handler and handed to a task, and a fresh driver starts the next
        handler at once: every handler still starts during the publisher's call.
        """
        while handlers:
            driver = self._driver
            if driver is None:
                driver, alive = _start_driver(_drive_handlers, self)
                self._driver, self._driver_alive = driver, alive
            try:
                awaited = driver.send((route, handlers, env))
            except BaseException:
                self._driver = None
                raise
            if awaited is IDLE:
                return
            # Suspended inside a handler: retire this driver once that handler is done.
            self._driver = None
            self._driver_alive.clear()
            current = driver.cr_frame.f_locals["handler"]  # type: ignore[attr-defined]
            sub = next(s for s in route.subs if s.handler is current)
            self._track(sub, env, resume(driver, awaited), True)
            handlers = handlers[handlers.index(current) + 1 :]

    def _dispatch_each(
        self, subs: tuple[Subscription[Any], ...], env: Envelope[Any], on_loop: bool
    ) -> None:
        handoff: list[tuple[Subscription[Any], Any]] = []
        refusals: list[Exception] = []
        for sub in subs:
            kind = sub.kind
            try:
                if not sub.accepts(env):
                    continue
                if kind == INLINE:
                    call_counted(sub, sub.argument(env))
                elif kind == TASK:
                    coro = sub.call(sub.argument(env))
                    if coro is SKIP:
                        continue
                    if on_loop:
                        self._step(sub, env, coro)
                    else:
                        handoff.append((sub, coro))
                else:
                    assert sub.queued is not None
                    queued = sub.queued
                    waits_on_loop = sub.is_async or queued.external  # own tasks or a pool's
                    queued.offer(env, can_wait=not (on_loop and waits_on_loop))
            except QueueClosedError:
                continue  # cancelled while we were dispatching
            except (QueueFullError, WouldBlock) as exc:
                if kind == QUEUED:
                    refusals.append(exc)
                else:
                    self._failures.report(sub, env, exc)
            except Exception as exc:
                self._failures.report(sub, env, exc)
        if handoff:
            self._hand_off(env, handoff)
        if refusals:
            raise refusals[0]

    def _step(self, sub: Subscription[Any], env: Envelope[Any], coro: Any) -> None:
        """Run a coroutine handler up to its first suspension; track the rest as a task."""
        try:
            awaited = coro.send(None)
        except StopIteration as stop:
            if stop.value is not SKIP:  # SKIP: dropped by a middleware
                sub.record_delivered()
            return
        except Exception as exc:
            self._failures.report(sub, env, exc)
            return
        sub.record_delivered()
        self._track(sub, env, resume(coro, awaited), True)

    def _hand_off(self, env: Envelope[Any], items: list[tuple[Subscription[Any], Any]]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            for sub, coro in items:
                coro.close()
                self._failures.report(sub, env, LoopNotRunningError(_NO_LOOP.format(sub.name)))
            return
        with self._lock:
            self._handoffs += 1
        loop.call_soon_threadsafe(self._run_handed_off, env, items)

    def _run_handed_off(
        self, env: Envelope[Any], items: list[tuple[Subscription[Any], Any]]
    ) -> None:
        with self._lock:
            self._handoffs -= 1
        state = self._threads.state
        was_busy = state.busy
        state.busy = True
        try:
            for sub, coro in items:
                self._step(sub, env, coro)
            if not was_busy and state.queue:
                self._drain(state.queue)
        except BaseException as exc:  # an interrupt: what was queued is dropped
            if not was_busy:
                self._drop(state.queue, exc)
            raise
        finally:
            if not was_busy:
                state.busy = False

    def _track(
        self,
        sub: Subscription[Any],
        env: Envelope[Any],
        coro: Coroutine[Any, Any, Any],
        counted: bool,
    ) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=f"tidings:{sub.name}:{env.id}")
        self._tasks.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None and isinstance(exc, Exception):
                self._failures.report(sub, env, exc, counted=counted)
            elif counted and exc is None and task.result() is SKIP:
                sub.take_back_delivered()  # dropped by a middleware after it suspended

        task.add_done_callback(done)
        return task

    def _bind_running_loop(self) -> bool:
        """Bind the bus to the loop running in this thread, if any and if it has none;
        whether this thread runs the bus's loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._loop is None or self._loop.is_closed():
            self._loop = loop
            self._loop_thread = threading.get_ident()
            for queued in list(self._queued):
                queued.start(loop)
            if self._carrier is not None:
                self._carrier.start(loop)
        return self._loop is loop

    async def emit(
        self,
        event: T,
        *,
        topic: str | None = None,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Delivery[T]:
        """Publish ``event`` and wait until every matching handler has finished.

        With a transport, wait until the server stored the event instead (its handlers
        run as the server delivers it); :class:`~tidings.PublishError` if it did not.

        Handlers start in priority order; async handlers that suspend then run
        concurrently. Queued subscriptions are awaited until their buffers take the event
        (backpressure under ``block``) and reported with ``queued=True``; their workers
        handle it later. Unlike :meth:`publish`, ``emit`` dispatches at once even from
        inside a handler. Re-entrancy is as for :meth:`publish`: an event a handler publishes
        (and a dead letter) is dispatched after every handler of this one has started.
        When every handler is a plain coroutine function, a handler that does not suspend
        runs in the caller's task, without a task of its own (see :meth:`_emit_eagerly`).
        Handler errors are reported in the returned
        :class:`~tidings.Delivery` (and, as always, counted, passed to ``on_error`` and
        dead-lettered), never raised: call ``delivery.raise_errors()`` to raise them.

        Raises:
            TopicRequiredError, InvalidTopicError, TypeError, BusClosedError: as
                :meth:`publish`.
            QueueFullError: as :meth:`publish`, after every other handler ran.
            WouldBlock: a queued handler's worker task emitted to its own full ``block``
                subscription (it would wait for itself), after every other handler ran.
        """
        self._bind_running_loop()
        route = self._route(type(event), topic)
        if self._closed:
            raise BusClosedError("the bus is closed; it accepts no more events")
        env = self._envelope(route, event, key, headers)
        return await self._emit(route, env)

    async def emit_envelope(self, envelope: Envelope[T]) -> Delivery[T]:
        """Emit an envelope made elsewhere (a bridge's decoded CloudEvent) as it is: its id,
        source, time, key, headers and attributes are kept, so a store deduplicates a
        redelivered copy by its id. The bus's clock merges its time (receive rule).

        Raises:
            ClockSkewError: the envelope's time leads this clock too far.
            InvalidTopicError, BusClosedError, QueueFullError, WouldBlock: as :meth:`emit`.
        """
        self._bind_running_loop()
        route = self._route(type(envelope.payload), envelope.topic)
        if self._closed:
            raise BusClosedError("the bus is closed; it accepts no more events")
        self._clock.update(envelope.time)
        return await self._emit(route, envelope)

    async def _emit(self, route: Route, env: Envelope[T]) -> Delivery[T]:
        """:meth:`emit` after the envelope is made: carry it, then call the handlers."""
        if self._carrier is not None:
            await self._carrier.carry(env)  # with a transport, handlers run where it delivers
        fast = route.fast_async
        if fast is not None and self._loop_thread == _get_ident() and self._observer is None:
            # Every handler a plain coroutine function: the fast path (see _emit_eagerly);
            # an observed bus calls every handler through Subscription.call, below.
            results: list[Any] = [None] * len(fast)
            suspended, refusal = self._emit_eagerly(route, fast, env, results)
            if suspended is not None:
                await asyncio.wait([task for _, task in suspended])
                for index, task in suspended:
                    if task.cancelled():
                        results[index] = Failed(asyncio.CancelledError())
            if refusal is not None:
                raise refusal
            return lazy_delivery(env, route.subs, results)
        outcomes: list[HandlerOutcome | tuple[Subscription[Any], asyncio.Task[Any]]] = []
        refusals: list[Exception] = []
        # While emit calls handlers, this thread is dispatching: what they publish (and their
        # dead letters) is dispatched after them, breadth first, as in publish.
        state = self._threads.state
        dispatching = not state.busy  # else the dispatch around this call drains
        if dispatching:
            state.busy = True
        try:
            for sub in route.subs:
                try:
                    if not sub.accepts(env):
                        continue
                    if sub.kind == QUEUED:
                        assert sub.queued is not None
                        if dispatching:
                            dispatching = await self._aoffer_aside(sub.queued, env, state)
                        else:
                            await sub.queued.aoffer(env)
                        outcomes.append(HandlerOutcome(sub.name, queued=True))
                        continue
                    result = sub.call(sub.argument(env))
                    if result is SKIP:
                        continue
                    if sub.kind == TASK:
                        awaited = result.send(None)
                except StopIteration as stop:
                    if stop.value is SKIP:  # dropped by a middleware
                        continue
                    sub.record_delivered()
                    outcomes.append(HandlerOutcome(sub.name, stop.value))
                except QueueClosedError:
                    continue
                except (QueueFullError, WouldBlock) as exc:
                    refusals.append(exc)
                except Exception as exc:
                    self._failures.report(sub, env, exc)
                    outcomes.append(HandlerOutcome(sub.name, error=exc))
                else:
                    if sub.kind == TASK:
                        task = self._track(sub, env, resume(result, awaited), False)
                        outcomes.append((sub, task))
                    else:
                        sub.record_delivered()
                        outcomes.append(HandlerOutcome(sub.name, result))
            if dispatching and state.queue:
                try:
                    self._drain(state.queue)
                except (QueueFullError, WouldBlock) as exc:
                    refusals.append(exc)
        except BaseException as exc:  # an interrupt or a cancellation: queued is dropped
            if dispatching:
                self._drop(state.queue, exc)
            raise
        finally:
            if dispatching:
                state.busy = False
        tasks = [o[1] for o in outcomes if isinstance(o, tuple)]
        if tasks:
            await asyncio.wait(tasks)
        for item in outcomes:
            if (
                isinstance(item, tuple)
                and not item[1].cancelled()
                and item[1].exception() is None
                and item[1].result() is not SKIP  # SKIP: dropped by a middleware
            ):
                item[0].record_delivered()
        if refusals:
            raise refusals[0]
        return Delivery(
            env,
            tuple(
                _outcome(o)
                for o in outcomes
                if not (
                    isinstance(o, tuple)
                    and o[1].done()
                    and not o[1].cancelled()
                    and o[1].exception() is None
                    and o[1].result() is SKIP
                )
            ),
        )

    def _emit_eagerly(
        self,
        route: Route,
        handlers: tuple[Any, ...],
        env: Envelope[Any],
        results: list[Any],
    ) -> tuple[list[tuple[int, asyncio.Task[Any]]] | None, Exception | None]:
        """Start emit's plain coroutine handlers eagerly, writing each one's result (or a
        :class:`~tidings.results.Failed`) into ``results`` at its place.

        As :meth:`_run_async` for publish: a long-lived driver (:func:`_drive_emit`) awaits
        the handlers in turn, so one that does not suspend costs one ``await`` (no task, no
        ``StopIteration``, no outcome record); the whole dispatch is counted once on the
        route. One that suspends retires the driver into a task, which writes its result
        when it finishes, and a fresh driver starts the next handler at once. The driver is
        taken while it runs, so an emit from inside a handler gets one of its own.

        Returns the suspended handlers' places and tasks (``None`` if none suspended) and
        the first refusal (:class:`~tidings.QueueFullError`, :class:`~tidings.WouldBlock`)
        of what the handlers published, for the caller to raise after awaiting them.
        """
        state = self._threads.state
        dispatching = not state.busy  # else the dispatch around this call drains
        if dispatching:
            state.busy = True
        suspended: list[tuple[int, asyncio.Task[Any]]] | None = None
        refusal: Exception | None = None
        try:
            next(route.count)
            start = 0
            while True:
                driver = self._emit_driver
                if driver is None:
                    driver, alive = _start_driver(_drive_emit, self)
                else:
                    alive = self._emit_alive
                    self._emit_driver = None
                job = (route, handlers if start == 0 else handlers[start:], env, results, start)
                awaited = driver.send(job)
                if awaited is IDLE:
                    self._emit_driver, self._emit_alive = driver, alive
                    break
                # Suspended inside a handler: the driver finishes it as a task, then ends.
                alive.clear()
                index: int = driver.cr_frame.f_locals["index"]  # type: ignore[attr-defined]
                task = self._track(route.subs[index], env, resume(driver, awaited), True)
                if suspended is None:
                    suspended = []
                suspended.append((index, task))
                start = index + 1
                if start == len(handlers):
                    break
            if dispatching and state.queue:
                try:
                    self._drain(state.queue)
                except (QueueFullError, WouldBlock) as exc:
                    refusal = exc
        except BaseException as exc:  # an interrupt: what was queued is dropped
            if dispatching:
                self._drop(state.queue, exc)
            raise
        finally:
            if dispatching:
                state.busy = False
        return suspended, refusal

    async def _aoffer_aside(self, queued: Queued, env: Envelope[Any], state: DispatchState) -> bool:
        """Await room in a queued subscription's buffer from inside emit's dispatch.

        The thread stops counting as dispatching while it awaits (other tasks on the loop
        publish as usual) and the events emit's handlers published so far wait aside; then
        they are queued again. Returns whether this emit still dispatches them: not when
        another dispatch runs on the thread by then (they join that one's).
        """
        held = list(state.queue)
        state.queue.clear()
        state.busy = False
        try:
            await queued.aoffer(env)
        finally:
            dispatching = not state.busy
            state.busy = True
            state.queue.extend(held)
        return dispatching

    # ------------------------------------------------------------------ errors

    def _publish_dead_letter(
        self, route: Route, letter: DeadLetter, headers: Mapping[str, str] | None
    ) -> None:
        """Dispatch a dead letter (the :class:`~tidings.dispatch.FailureReporter`'s last step)."""
        self._deliver(route, self._envelope(route, letter, None, headers))

    def _publish_failed(self, env: Envelope[Any], handler: str, exc: BaseException) -> None:
        """A transport did not publish ``env``: count it (metrics) and dead-letter it."""
        if self._observer is not None:
            self._observer.publish_failed()
        self._failures.dead_letter(DeadLetter(env, handler, exc))

    # ------------------------------------------------------------------ streams

    @overload
    def stream(
        self,
        target: type[T],
        *,
        maxsize: int = 256,
        overflow: Overflow = "block",
        where: Callable[[T], bool] | None = None,
    ) -> AbstractAsyncContextManager[EventStream[T]]: ...
    @overload
    def stream(
        self,
        target: str,
        *,
        maxsize: int = 256,
        overflow: Overflow = "block",
        where: Callable[[Any], bool] | None = None,
    ) -> AbstractAsyncContextManager[EventStream[Any]]: ...
    def stream(
        self,
        target: type[Any] | str,
        *,
        maxsize: int = 256,
        overflow: Overflow = "block",
        where: Callable[[Any], bool] | None = None,
    ) -> AbstractAsyncContextManager[EventStream[Any]]:
        """Pull events as an async iterator, through a bounded buffer.

        ``async with bus.stream(OrderPlaced, maxsize=256) as events: async for e in events``.
        The buffer holds at most ``maxsize`` events, so a slow consumer never makes memory
        grow; when it is full ``overflow`` decides, as for queued subscriptions: ``block``
        makes publishers on other threads wait and ``emit`` await, and refuses
        ``publish`` on the loop's own thread with :class:`~tidings.WouldBlock`;
        ``drop_oldest``/``drop_newest`` discard and count (``events.dropped``); ``error``
        refuses with :class:`~tidings.QueueFullError`. Iteration ends when the block exits
        or the bus closes.

        Raises:
            ValueError: if ``maxsize`` is not positive or ``overflow`` is unknown.
            LoopNotRunningError: outside a running event loop.
        """
        return self._stream(target, maxsize, overflow, where)

    @asynccontextmanager
    async def _stream(
        self,
        target: type[Any] | str,
        maxsize: int,
        overflow: Overflow,
        where: Callable[[Any], bool] | None,
    ) -> AsyncIterator[EventStream[Any]]:
        if not self._bind_running_loop():
            raise LoopNotRunningError("streams need the bus's event loop; use them in asyncio")
        if self._closed:
            raise BusClosedError("the bus is closed; streams need an open bus")
        stream, sub = stream_subscription(
            self._port,
            target,
            maxsize=maxsize,
            overflow=overflow,
            where=where,
            on_failure=self._failures.report,
            on_drained=self._forget_queued,
        )
        self._register(sub)
        try:
            yield stream
        finally:
            sub.cancel()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Bus:
        """Bind the bus to the running event loop (for async handlers and workers).
        Idempotent.

        Raises:
            BusClosedError: if the bus is closed.
        """
        if self._closed:
            raise BusClosedError("the bus is closed; create a new one")
        self._bind_running_loop()
        if self._carrier is not None:
            await self._carrier.connect()
        return self

    async def aclose(self, timeout: float = 5.0) -> CloseReport:
        """Stop accepting events, then finish what is in flight within ``timeout`` seconds:
        async handlers running, events handed over from other threads, events waiting in
        queued subscriptions' buffers. Whatever is still unfinished then is cancelled (tasks)
        or abandoned (buffered events) and listed in the returned report. Idempotent.

        With a transport, first stop fetching, finish the handlers in flight and settle
        their events, send what was published and wait for its acks, then disconnect.
        With a store, finish deferred appends, stop log followers after the record in hand
        (durable ones resume from their checkpoint next time), then close the store.

        Raises:
            TypeError: if ``timeout`` is not a number; ValueError: if it is negative (or
                NaN). Checked before anything closes.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(
                f"timeout= is a number of seconds, not {type(timeout).__name__} {timeout!r}"
            )
        if not timeout >= 0:
            raise ValueError(f"timeout= must be at least 0 seconds, not {timeout!r}")
        carrier = self._carrier
        if carrier is not None:
            await carrier.disconnect(timeout)  # also after close(), which leaves it open
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if carrier is not None:
            await carrier.settle(deadline)
        while self._handoffs or self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=remaining)
            else:
                await asyncio.sleep(0)
        queued = list(self._queued)
        for q in queued:
            q.close()
        for q in queued:
            await q.wait_idle(deadline)
        unfinished = [t.get_name().removeprefix("tidings:") for t in self._tasks]
        for q in queued:
            left = q.pending()
            if left:
                unfinished.append(f"{q.sub.name}: {left} queued event(s) not handled")
            q.cancel_workers()
        for task in list(self._tasks):
            task.cancel()
        for pool in self._pools:
            pool.close()
        if carrier is not None:
            unfinished += await carrier.aclose(deadline)
        if unfinished:
            logger.warning(
                "bus closed with %d unfinished: %s", len(unfinished), unfinished, extra=log_fields()
            )
        return CloseReport(tuple(sorted(unfinished)))

    def close(self) -> None:
        """Stop accepting events and subscriptions (for programs without an event loop).

        Queued subscriptions' buffers are closed; their worker threads finish what they hold.
        Like :meth:`aclose`, this closes the bus's store (the bus owns it) when it can: a
        store with synchronous operations (memory, SQLite) on a bus without a transport and
        with no log follower running on an event loop. A transport, an async-only store
        (PostgreSQL), or a store that a transport's subscriptions or log followers still
        use is left open: close those with :meth:`aclose` (callable after this).
        """
        self._closed = True
        for q in list(self._queued):
            q.close()
        for pool in self._pools:
            pool.close()
        if self._carrier is not None:
            self._carrier.close_sync()

    @property
    def closed(self) -> bool:
        """Whether the bus has stopped accepting events."""
        return self._closed

    # ------------------------------------------------------------------ the durable log

    @property
    def store(self) -> EventStore | None:
        """The durable log every published event is appended to, if the bus has one."""
        return None if self._log is None else self._log.store

    def _require_store(self) -> EventStore:
        if self._log is None:
            raise InvalidHandlerError(
                "this needs the durable log: create the bus with Bus(store=...) "
                "(for example store='sqlite:///events.db')"
            )
        return self._log.store

    async def replay(
        self,
        fold: Callable[[S, Any], S],
        initial: S,
        *,
        topic: str | None = None,
        after: int = 0,
        upto: int | None = None,
        since: int | datetime.datetime | None = None,
        until: int | datetime.datetime | None = None,
        unknown: Literal["error", "skip", "raw"] = "error",
    ) -> S:
        """Fold the stored events into a state: ``fold(state, event) -> state``, in log order.

        Args:
            fold: called with the state so far and each matching payload.
            initial: the state before the first event.
            topic: only events whose topic matches this topic or pattern.
            after: only positions after ``after``.
            upto: only positions up to ``upto`` (inclusive).
            since: only events whose HLC time is at least ``since``: a packed HLC time
                (``envelope.time``) or an aware datetime.
            until: only events whose HLC time is less than ``until`` (as ``since``).
            unknown: a record of a type no class is known for: ``"error"`` raises,
                ``"skip"`` leaves it out, ``"raw"`` folds its payload as JSON values.

        Raises:
            InvalidHandlerError: if the bus has no store.
            UnknownEventTypeError, DecodeError: for unreadable records.
        """
        store = self._require_store()
        if self._carrier is not None:  # read your writes: deferred appends first
            await self._carrier.flush()
        state = initial
        read = 0
        async for record in store.iter_read(
            after=after,
            upto=upto,
            topic=topic,
            since=hlc_bound(since),
            until=hlc_bound(until),
            unknown=unknown,
        ):
            state = fold(state, record.envelope.payload)
            read += 1
        if self._observer is not None:
            self._observer.store_counted(0, read)
        return state

    async def project(self, projection: Projection[S]) -> S:
        """Bring ``projection`` up to date with the log (from its latest snapshot); return its
        state.

        Raises:
            InvalidHandlerError: if the bus has no store.
        """
        store = self._require_store()
        if self._carrier is not None:  # read your writes: deferred appends first
            await self._carrier.flush()
        return await projection.catch_up(store)

    async def flush(self) -> None:
        """Wait until every event published so far is in the store and, with a transport,
        stored by the server (acknowledged).

        A store that appends synchronously (SQLite, memory) has them already. An async-only
        store (PostgreSQL) appends what is published on the loop's own thread behind the
        publisher, in publish order: await this before reading the store directly.
        :meth:`replay` and :meth:`project` do it themselves. With a transport, ``publish``
        many events then ``await bus.flush()`` is how to publish with acknowledgement
        without waiting for each event (as :meth:`emit` does): it returns once the server
        acknowledged every event published before it (and any published while it waits).
        To a broker gone it waits until the transport fails the events (each after its
        ``publish_timeout``, Kafka and NATS; the outbox hands them over a window at a
        time); a close meanwhile fails what was never sent. Await it on the bus's loop. A
        no-op without a store or transport.

        Raises:
            PublishError: with a transport, an event published since the last ``flush``
                that returned was not stored (the first such event named; each failure
                was also reported as it happened: logged, counted, dead-lettered).
            PublishOutcomeUnknownError: no event refused, but one's outcome is unknown.
        """
        carrier = self._carrier
        if carrier is not None:
            await carrier.flush()
            await carrier.acknowledged()

    def appending_together(self) -> AppendBatch | None:
        """A context manager in which :meth:`publish` calls on the loop's thread are
        appended to the log together, in one transaction, and dispatched after it (then
        ``await batch.wait()``: each one's append error, or None); see :mod:`tidings._log`.
        ``None`` when the bus has no log or has a transport (publish one by one then)."""
        return None if self._carrier is None else self._carrier.together()

    async def __aenter__(self) -> Bus:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Bus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ testing

    @contextmanager
    def record(self, target: type[Any] | str = ">") -> Iterator[Recorder]:
        """Record every envelope published on ``target`` while the block runs.

        ``with bus.record() as recorded: ...`` then assert on ``recorded``, a
        :class:`tidings.testing.Recorder`.
        """
        recorder = Recorder()
        sub = self.subscribe(
            target,
            recorder.append,
            priority=_RECORDER_PRIORITY,
            envelope=True,
            weak=False,
            group=_LOCAL,
        )
        try:
            yield recorder
        finally:
            sub.cancel()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Bus {state} subscriptions={len(self._table)}>"


class _BusPort:
    """The bus as its parts see it: the :class:`~tidings._ports.BusPort` of its log and
    remote side, and the :class:`~tidings.subscription.SubscriptionOwner` of its
    subscriptions."""

    __slots__ = ("_bus",)

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._bus._loop

    @property
    def loop_thread(self) -> int | None:
        return self._bus._loop_thread

    @property
    def failures(self) -> FailureReporter:
        return self._bus._failures

    @property
    def observer(self) -> Observer | None:
        return self._bus._observer

    @property
    def store(self) -> EventStore | None:
        return self._bus.store

    def after_write_ahead(self, route: Route, env: Envelope[Any]) -> None:
        self._bus._after_write_ahead(route, env)

    def publish_failed(self, env: Envelope[Any], handler: str, exc: BaseException) -> None:
        self._bus._publish_failed(env, handler, exc)

    def unsubscribe(self, sub: Subscription[Any], *, close: bool = True) -> None:
        self._bus._unsubscribe(sub, close=close)

    def release(self, sub: Subscription[Any]) -> None:
        self._bus._release(sub)

    # The ObservationPort (tidings._ports): how tidings.observability observes the bus.

    def attach(
        self,
        observer: Observer | None,
        publisher: _fastpath.ObservedPublisher | None,
        emit: Callable[..., Coroutine[Any, Any, Delivery[Any]]] | None,
    ) -> None:
        bus = self._bus
        bus._observer = observer
        bus._publisher = bus._stamper if publisher is None else publisher
        bus.__class__ = Bus if emit is None else _observed_class(emit)
        bus._table.drop_all()  # rebuilt when next used: subscriptions' fast paths changed

    @property
    def publisher(self) -> _fastpath.Publisher:
        return self._bus._stamper

    @property
    def emit_unhooked(self) -> Callable[..., Coroutine[Any, Any, Delivery[Any]]]:
        return MethodType(Bus.emit, self._bus)

    def publish_each(
        self, route: Route, event: Any, key: str | None, headers: Mapping[str, str] | None
    ) -> Envelope[Any]:
        return self._bus._publish_on(route.slow(), event, key, headers)

    def publish_routed(
        self, route: Route, event: Any, key: str | None, headers: Mapping[str, str] | None
    ) -> Envelope[Any]:
        return self._bus._publish_on(route, event, key, headers)

    def route(self, event_type: type, topic: str | None) -> Route:
        return self._bus._route(event_type, topic)

    @property
    def dispatching(self) -> ThreadDispatch:
        return self._bus._threads

    @property
    def transport_system(self) -> str | None:
        remote = self._bus._remote
        return None if remote is None else remote.transport.system

    @property
    def transport(self) -> Transport | None:
        remote = self._bus._remote
        return None if remote is None else remote.transport

    @property
    def client_id(self) -> str:
        bus = self._bus
        return f"{bus._source}/{bus._clock.node}"

    def local_subscriptions(self) -> tuple[Subscription[Any], ...]:
        return self._bus._table.subscriptions()

    def all_subscriptions(self) -> tuple[Subscription[Any], ...]:
        bus = self._bus
        followers = () if bus._log is None else tuple(bus._log.followers)
        return (*bus.subscriptions(), *followers)


def _observed_class(emit: Callable[..., Coroutine[Any, Any, Delivery[Any]]]) -> type[Bus]:
    """The class of one observed bus: :class:`Bus` with ``emit`` replaced by its observer's
    hook. The bus's class is swapped for it (see :func:`observation_port`), as
    :meth:`Subscription.observe` swaps a subscription's: the hook is called straight, with
    no call in between, and :meth:`Bus.emit` itself carries no check, so an unobserved bus
    pays nothing. (``publish`` stays :meth:`Bus.publish`: an observed bus's publisher, an
    :class:`~tidings._speedups.ObservedPublisher`, carries its observer's tests.)"""
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": _observed_class.__doc__,
        "__slots__": (),  # the same layout as Bus, so that the class can be swapped
        "emit": staticmethod(emit),
    }
    return type("ObservedBus", (Bus,), namespace)


def observation_port(bus: Bus) -> ObservationPort:
    """The one seam :mod:`tidings.observability` observes ``bus`` through (see
    :class:`tidings._ports.ObservationPort`)."""
    return bus._port


_RECORDER_PRIORITY = 2**62
_LOCAL: Any = "\x00local"  # group= of subscriptions that stay in the process
_NO_LOOP = (
    "async handler {} has no running event loop to run on; publish from inside asyncio or "
    "start the bus with 'async with Bus() as bus' first"
)


def _start_driver(
    drive: Callable[[Bus, list[bool]], Coroutine[Any, Any, None]], bus: Bus
) -> tuple[Coroutine[Any, Any, None], list[bool]]:
    """A new driver coroutine (:func:`_drive_handlers`, :func:`_drive_emit`), stepped to its
    first wait for a job, and the flag that retires it (empty it)."""
    alive = [True]
    driver = drive(bus, alive)
    driver.send(None)
    return driver, alive


async def _drive_handlers(bus: Bus, alive: list[bool]) -> None:
    """The driver behind :meth:`Bus._run_async`: runs one job of handlers per ``send``,
    until it is retired (``alive`` emptied) while a handler of its job was suspended."""
    failed = bus._failures.report_plain
    while True:
        route, handlers, env = await next_job()
        payload = env.payload
        for handler in handlers:
            try:
                await handler(payload)
            except Exception as exc:
                failed(route, handler, env, exc)
            if not alive:
                return


async def _drive_emit(bus: Bus, alive: list[bool]) -> None:
    """The driver behind :meth:`Bus._emit_eagerly`: per ``send``, awaits a job's handlers in
    turn from place ``index`` on, writing each result (or :class:`Failed`) into the job's
    list; ends after the handler it was suspended in once retired (``alive`` emptied)."""
    failed = bus._failures.report_plain
    while True:
        route, handlers, env, results, index = await next_job()
        payload = env.payload
        for handler in handlers:
            try:
                results[index] = await handler(payload)
            except Exception as exc:
                results[index] = Failed(exc)
                failed(route, handler, env, exc)
            if not alive:
                return
            index += 1


def _copy_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy of an envelope's headers, checked: str names to str values.

    Raises:
        TypeError: if ``headers`` is not a mapping of str to str.
    """
    try:
        copied = dict(headers)
    except (TypeError, ValueError):
        raise TypeError(
            f"headers= takes a mapping of str to str, not {type(headers).__name__} {headers!r}"
        ) from None
    for name, value in copied.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"headers= maps str to str (they travel as text); {name!r}: {value!r} is "
                f"{type(name).__name__} to {type(value).__name__}"
            )
    return MappingProxyType(copied)


def _bad_key(key: object) -> TypeError:
    return TypeError(f"key= is a str (the ordering key) or None, not {type(key).__name__} {key!r}")


def _outcome(item: HandlerOutcome | tuple[Subscription[Any], asyncio.Task[Any]]) -> HandlerOutcome:
    if isinstance(item, HandlerOutcome):
        return item
    sub, task = item
    if task.cancelled():
        return HandlerOutcome(sub.name, error=asyncio.CancelledError())
    exc = task.exception()
    if exc is not None:
        return HandlerOutcome(sub.name, error=exc)
    return HandlerOutcome(sub.name, task.result())
