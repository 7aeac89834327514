"""The :class:`Bus`: subscribe handlers, publish events, await deliveries, stream events.

Semantics, which the tests hold the bus to:

- **Order.** The handlers of one event run by priority, higher first, ties in subscription
  order. Sync handlers run in the publisher's thread; async handlers run on the bus's event
  loop.
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
- **Async handlers** are started eagerly in the publisher's call when it runs on the bus's
  loop: one that never suspends completes before ``publish`` returns, without a task. From
  another thread they are handed to the loop. Without a running loop they fail with
  :class:`~tidings.LoopNotRunningError` (dead-lettered like any failure).
- **Threads.** ``publish`` is safe from any thread and takes no lock: the handler table of
  each topic is precomputed and replaced, never mutated, when subscriptions change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from bisect import insort
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from tidings._stream import EventStream, StreamOverflow
from tidings.clock import HybridClock
from tidings.dead_letter import DEAD_LETTER_TOPIC, DeadLetter
from tidings.delivery import Delivery, HandlerOutcome, resume
from tidings.event import NO_HEADERS, Envelope, topic_of
from tidings.exceptions import BusClosedError, LoopNotRunningError
from tidings.recording import Recorder
from tidings.subscription import SKIP, Subscription
from tidings.topics import validate_topic

if TYPE_CHECKING:
    from types import TracebackType

    from tidings._remote import Remote
    from tidings.transports.base import Transport

__all__ = ("Bus", "CloseReport", "ErrorHook", "Handles")

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("tidings")

ErrorHook = Callable[[Envelope[Any], Subscription[Any], BaseException], None]
"""``on_error(envelope, subscription, exception)``: called for every handler failure."""


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


@dataclass(frozen=True, slots=True)
class CloseReport:
    """What :meth:`Bus.aclose` could not finish within its timeout.

    Attributes:
        unfinished: ``"handler for event-id"`` for each async handler that was still running
            and was cancelled.
    """

    unfinished: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Whether everything in flight finished."""
        return not self.unfinished


class _Route:
    """The precomputed handler table of one (topic, event class): replaced, never mutated."""

    __slots__ = ("fast", "subs", "topic")

    def __init__(self, topic: str, subs: tuple[Subscription[Any], ...]) -> None:
        self.topic = topic
        self.subs = subs
        fast = tuple(s.fast_handler for s in subs)
        distinct = len({id(h) for h in fast}) == len(fast)
        # Plain sync payload handlers are called directly; anything else goes through its
        # subscription's invoker.
        self.fast: tuple[Callable[[Any], object], ...] | None = (
            fast if distinct and all(h is not None for h in fast) else None  # type: ignore[assignment]
        )


class _ThreadState(threading.local):
    """Per-thread dispatch state: the queue of events published from inside handlers."""

    pending: deque[tuple[_Route, Envelope[Any]]] | None = None


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

    A bus needs no event loop for sync handlers. ``async with Bus() as bus`` (or
    ``await bus.start()``) binds it to the running loop for async handlers; publishing or
    emitting from inside a running loop binds it too.
    """

    def __init__(
        self,
        *,
        source: str = "tidings",
        clock: HybridClock | None = None,
        on_error: ErrorHook | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._source = source
        self._clock = clock if clock is not None else HybridClock()
        self._tick = self._clock.now
        self._node = self._clock.node
        self._on_error = on_error
        self._lock = threading.Lock()
        self._subs: list[Subscription[Any]] = []
        self._routes: dict[type, _Route] = {}
        self._topic_routes: dict[tuple[str, type], _Route] = {}
        self._local = _ThreadState()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handoffs = 0
        self._streams: set[EventStream[Any]] = set()
        self._remote: Remote | None = None
        if transport is not None:
            from tidings._remote import Remote

            self._remote = Remote(self, transport, self._clock)

    # ------------------------------------------------------------------ subscribing

    @overload
    def subscribe(
        self,
        target: type[T],
        handler: Callable[[T], object] | Callable[[Envelope[T]], object],
        *,
        priority: int = 0,
        where: Callable[[T], bool] | None = None,
        once: bool = False,
        weak: bool | None = None,
        owner: object | None = None,
        envelope: bool | None = None,
        group: str | None = None,
    ) -> Subscription[T]: ...
    @overload
    def subscribe(
        self,
        target: str,
        handler: Callable[[Any], object],
        *,
        priority: int = 0,
        where: Callable[[Any], bool] | None = None,
        once: bool = False,
        weak: bool | None = None,
        owner: object | None = None,
        envelope: bool | None = None,
        group: str | None = None,
    ) -> Subscription[Any]: ...
    def subscribe(
        self,
        target: type[T] | str,
        handler: Callable[..., object],
        *,
        priority: int = 0,
        where: Callable[[Any], bool] | None = None,
        once: bool = False,
        weak: bool | None = None,
        owner: object | None = None,
        envelope: bool | None = None,
        group: str | None = None,
    ) -> Subscription[Any]:
        """Subscribe ``handler`` to an event class, a topic or a pattern.

        Args:
            target: an event class (instances of it and its subclasses published on its
                topic), a topic, or a pattern with ``*`` and ``>`` wildcards.
            handler: a function, coroutine function or callable. It receives the payload,
                or the :class:`~tidings.Envelope` when its first parameter is annotated
                ``Envelope[...]`` (or ``envelope=True`` is passed).
            priority: higher runs first; equal priorities run in subscription order.
            where: a predicate on the payload; the handler sees only events it accepts.
            once: end the subscription after the first delivered event.
            weak: hold the handler weakly; by default bound methods are held weakly and
                everything else strongly.
            owner: end the subscription when this object is garbage-collected.
            envelope: force (``True``) or refuse (``False``) envelope delivery.
            group: with a transport, share the events with the same group's subscriptions
                in every process (competing consumers); without, every process gets every
                event. Ignored without a transport (one process is its own group).

        Returns:
            The :class:`Subscription` handle.

        Raises:
            InvalidHandlerError: if the handler, ``where`` or ``owner`` is unusable.
            InvalidTopicError: if the topic or pattern is malformed.
            TopicRequiredError: if the event class is a builtin that names no topic.
            BusClosedError: if the bus is closed.
        """
        if self._closed:
            raise BusClosedError("the bus is closed; subscribe before closing it")
        sub: Subscription[Any] = Subscription(
            target,
            handler,
            priority=priority,
            where=where,
            once=once,
            weak=weak,
            owner=owner,
            envelope=envelope,
            cancel=self._unsubscribe,
        )
        remote = self._remote
        if remote is not None and group is not _LOCAL and sub.pattern != DEAD_LETTER_TOPIC:
            sub._cancel = remote.unsubscribe
            remote.subscribe(sub, group)
            return sub
        with self._lock:
            subs = list(self._subs)
            insort(subs, sub, key=_order)
            self._install(subs)
        return sub

    @overload
    def on(
        self,
        target: type[T],
        *,
        priority: int = 0,
        where: Callable[[T], bool] | None = None,
        once: bool = False,
        weak: bool | None = None,
        owner: object | None = None,
        envelope: bool | None = None,
        group: str | None = None,
    ) -> Handles[T]: ...
    @overload
    def on(
        self,
        target: str,
        *,
        priority: int = 0,
        where: Callable[[Any], bool] | None = None,
        once: bool = False,
        weak: bool | None = None,
        owner: object | None = None,
        envelope: bool | None = None,
        group: str | None = None,
    ) -> Handles[Any]: ...
    def on(
        self,
        target: type[T] | str,
        *,
        priority: int = 0,
        where: Callable[[Any], bool] | None = None,
        once: bool = False,
        weak: bool | None = None,
        owner: object | None = None,
        envelope: bool | None = None,
        group: str | None = None,
    ) -> Handles[Any]:
        """Decorator form of :meth:`subscribe`; returns the function unchanged.

        The :class:`Subscription` is reachable as ``bus.subscriptions()``; to cancel one
        later, use :meth:`subscribe` and keep its handle.
        """

        def subscribe(handler: Callable[..., Any]) -> Subscription[Any]:
            return self.subscribe(
                target,
                handler,
                priority=priority,
                where=where,
                once=once,
                weak=weak,
                owner=owner,
                envelope=envelope,
                group=group,
            )

        return Handles(subscribe)

    def _unsubscribe(self, sub: Subscription[Any]) -> None:
        with self._lock:
            subs = [s for s in self._subs if s is not sub]
            if len(subs) != len(self._subs):
                self._install(subs)

    def _install(self, subs: list[Subscription[Any]]) -> None:
        # Publishers read self._routes before self._subs: replacing the subscriptions first
        # means a route built from an old list can only land in an old, discarded cache.
        self._subs = subs
        self._routes = {}
        self._topic_routes = {}

    def subscriptions(self) -> tuple[Subscription[Any], ...]:
        """The active subscriptions, in dispatch order (priority, then age)."""
        if self._remote is not None:
            return tuple(sorted((*self._subs, *self._remote.subscriptions()), key=_order))
        return tuple(self._subs)

    # ------------------------------------------------------------------ routing

    def _route(self, event_type: type, topic: str | None) -> _Route:
        if topic is None:
            cache: dict[Any, _Route] = self._routes
            key: Any = event_type
            topic = topic_of(event_type)
        else:
            cache = self._topic_routes
            key = (validate_topic(topic), event_type)
        route = cache.get(key)
        if route is None:
            subs = self._subs
            route = _Route(topic, tuple(s for s in subs if s.matches(topic, event_type)))
            cache[key] = route
        return route

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        event: T,
        *,
        topic: str | None = None,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope[T]:
        """Publish ``event`` and dispatch it to every matching handler.

        Sync handlers have run when this returns (unless it was called from inside a
        handler, in which case the event is queued behind the current one); async handlers
        have run up to their first suspension when called on the bus's loop.
        Thread-safe; takes no lock.

        Args:
            event: the event; its class names its topic unless ``topic`` is given.
            topic: publish on this topic instead of the class's.
            key: ordering key: queued and remote deliveries keep order per key.
            headers: string metadata carried with the event.

        Returns:
            The :class:`~tidings.Envelope` that was dispatched.

        Raises:
            TopicRequiredError: if ``event`` is a builtin value and no ``topic`` is given.
            InvalidTopicError: if ``topic`` is malformed.
            BusClosedError: if the bus is closed.
        """
        if topic is None:
            route = self._routes.get(type(event)) or self._route(type(event), None)
        else:
            route = self._route(type(event), topic)
        if self._closed:
            raise BusClosedError("the bus is closed; it accepts no more events")
        env = self._envelope(route, event, key, headers)
        if self._remote is not None:
            self._remote.send(env)
        if route.subs:
            self._deliver(route, env)
        return env

    def _deliver(self, route: _Route, env: Envelope[Any]) -> None:
        """Dispatch now, or after the current dispatch when called from inside one."""
        local = self._local
        pending = local.pending
        if pending is not None:
            pending.append((route, env))
            return
        local.pending = pending = deque()
        try:
            self._dispatch(route, env)
            while pending:
                self._dispatch(*pending.popleft())
        finally:
            local.pending = None

    def _dispatch(self, route: _Route, env: Envelope[Any]) -> None:
        fast = route.fast
        if fast is not None:
            payload = env.payload
            for handler in fast:
                try:
                    handler(payload)
                except Exception as exc:
                    sub = next(s for s in route.subs if s.fast_handler is handler)
                    self._failed(sub, env, exc)
            return
        for sub in route.subs:
            try:
                result = sub.invoke(env)
            except Exception as exc:
                self._failed(sub, env, exc)
                continue
            if sub.is_async and result is not SKIP:
                self._start(sub, env, result)

    def _start(self, sub: Subscription[Any], env: Envelope[Any], coro: Any) -> None:
        """Run a handler's coroutine eagerly on the loop thread, or hand it to the loop."""
        if self._loop_thread != threading.get_ident() and not self._bind_running_loop():
            loop = self._loop
            if loop is None or loop.is_closed():
                coro.close()
                self._failed(sub, env, LoopNotRunningError(_NO_LOOP.format(sub.name)))
                return
            with self._lock:
                self._handoffs += 1
            loop.call_soon_threadsafe(self._start_handed_off, sub, env, coro)
            return
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._failed(sub, env, exc)
            return
        self._track(sub, env, resume(coro, awaited))

    def _start_handed_off(self, sub: Subscription[Any], env: Envelope[Any], coro: Any) -> None:
        with self._lock:
            self._handoffs -= 1
        pending = self._local.pending
        self._local.pending = deque() if pending is None else pending
        try:
            self._start(sub, env, coro)
            if pending is None:
                while self._local.pending:
                    self._dispatch(*self._local.pending.popleft())
        finally:
            self._local.pending = pending

    def _track(
        self, sub: Subscription[Any], env: Envelope[Any], coro: Coroutine[Any, Any, Any]
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
                self._failed(sub, env, exc)

        task.add_done_callback(done)
        return task

    def _bind_running_loop(self) -> bool:
        """Bind the bus to the loop running in this thread, if any and if it has none."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._loop is None or self._loop.is_closed():
            self._loop = loop
            self._loop_thread = threading.get_ident()
        return self._loop is loop

    def _envelope(
        self, route: _Route, event: T, key: str | None, headers: Mapping[str, str] | None
    ) -> Envelope[T]:
        return Envelope(
            route.topic,
            event,
            self._tick(),
            key,
            self._source,
            NO_HEADERS if headers is None else MappingProxyType(dict(headers)),
            None,
            self._node,
        )

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
        concurrently. Unlike :meth:`publish`, ``emit`` dispatches at once even from inside a
        handler. Handler errors are reported in the returned :class:`~tidings.Delivery`
        (and, as always, counted, passed to ``on_error`` and dead-lettered), never raised:
        call ``delivery.raise_errors()`` to raise them.

        Raises:
            TopicRequiredError, InvalidTopicError, BusClosedError: as :meth:`publish`.
        """
        self._bind_running_loop()
        route = self._route(type(event), topic)
        if self._closed:
            raise BusClosedError("the bus is closed; it accepts no more events")
        env = self._envelope(route, event, key, headers)
        if self._remote is not None:
            await self._remote.publish(env)  # handlers run where the server delivers it
        outcomes: list[HandlerOutcome | tuple[Subscription[Any], asyncio.Task[Any]]] = []
        for sub in route.subs:
            try:
                result = sub.invoke(env)
                if result is SKIP:
                    continue
                if sub.is_async:
                    awaited = result.send(None)
            except StopIteration as stop:
                outcomes.append(HandlerOutcome(sub.name, stop.value))
            except Exception as exc:
                self._failed(sub, env, exc)
                outcomes.append(HandlerOutcome(sub.name, error=exc))
            else:
                if sub.is_async:
                    outcomes.append((sub, self._track(sub, env, resume(result, awaited))))
                else:
                    outcomes.append(HandlerOutcome(sub.name, result))
        tasks = [o[1] for o in outcomes if isinstance(o, tuple)]
        if tasks:
            await asyncio.wait(tasks)
        return Delivery(env, tuple(_outcome(o) for o in outcomes))

    # ------------------------------------------------------------------ errors

    def _failed(
        self,
        sub: Subscription[Any],
        env: Envelope[Any],
        exc: BaseException,
        *,
        attempts: int = 1,
        final: bool = True,
    ) -> None:
        """Count, report and (when ``final``: no retry follows) dead-letter a failure."""
        sub.record_failure()
        if env.topic == DEAD_LETTER_TOPIC:
            logger.error(
                "dead-letter handler %s failed on event %s; not dead-lettered again",
                sub.name,
                env.id,
                exc_info=exc,
            )
            return
        logger.debug("handler %s failed on event %s (%s)", sub.name, env.id, env.topic)
        if self._on_error is not None:
            try:
                self._on_error(env, sub, exc)
            except Exception:
                logger.exception("on_error hook failed for event %s", env.id)
        if not final:
            return
        letter = DeadLetter(env, sub.name, exc, attempts)
        route = self._route(DeadLetter, None)
        if route.subs:  # in-flight work may still dead-letter while the bus closes
            self._deliver(route, self._envelope(route, letter, None, None))

    # ------------------------------------------------------------------ streams

    @overload
    def stream(
        self,
        target: type[T],
        *,
        maxsize: int = 256,
        overflow: StreamOverflow = "drop_oldest",
        where: Callable[[T], bool] | None = None,
    ) -> AbstractAsyncContextManager[EventStream[T]]: ...
    @overload
    def stream(
        self,
        target: str,
        *,
        maxsize: int = 256,
        overflow: StreamOverflow = "drop_oldest",
        where: Callable[[Any], bool] | None = None,
    ) -> AbstractAsyncContextManager[EventStream[Any]]: ...
    def stream(
        self,
        target: type[Any] | str,
        *,
        maxsize: int = 256,
        overflow: StreamOverflow = "drop_oldest",
        where: Callable[[Any], bool] | None = None,
    ) -> AbstractAsyncContextManager[EventStream[Any]]:
        """Pull events as an async iterator, through a bounded buffer.

        ``async with bus.stream(OrderPlaced, maxsize=256) as events: async for e in events``.
        The buffer holds at most ``maxsize`` events; when it is full ``overflow`` decides:
        ``drop_oldest`` (default) or ``drop_newest`` discard one event and count it in
        ``events.dropped``, ``error`` fails the delivery (dead-lettered). Iteration ends
        when the bus closes.

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
        overflow: StreamOverflow,
        where: Callable[[Any], bool] | None,
    ) -> AsyncIterator[EventStream[Any]]:
        stream: EventStream[Any] = EventStream(self._require_loop(), maxsize, overflow)
        sub = self.subscribe(target, stream.put, where=where, weak=False)
        self._streams.add(stream)
        try:
            yield stream
        finally:
            sub.cancel()
            self._streams.discard(stream)

    # ------------------------------------------------------------------ lifecycle

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if not self._bind_running_loop() or self._loop is None:
            raise LoopNotRunningError("streams need the bus's event loop; use them in asyncio")
        return self._loop

    async def start(self) -> Bus:
        """Bind the bus to the running event loop (for async handlers). Idempotent.

        Raises:
            BusClosedError: if the bus is closed.
        """
        if self._closed:
            raise BusClosedError("the bus is closed; create a new one")
        self._bind_running_loop()
        if self._remote is not None:
            await self._remote.start()
        return self

    async def aclose(self, timeout: float = 5.0) -> CloseReport:
        """Stop accepting events, wait up to ``timeout`` seconds for async handlers in flight,
        cancel the rest and report them. Idempotent.

        With a transport, first stop fetching, finish the handlers in flight and settle
        their events, send what was published and wait for its acks, then disconnect.
        """
        if self._remote is not None and not self._closed:
            await self._remote.aclose(timeout)
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._handoffs or self._tasks:
            if not self._tasks:
                await asyncio.sleep(0)
                if loop.time() >= deadline:
                    break
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
        unfinished = tuple(sorted(t.get_name().removeprefix("tidings:") for t in self._tasks))
        for task in list(self._tasks):
            task.cancel()
        if unfinished:
            logger.warning(
                "bus closed with %d unfinished handler(s): %s", len(unfinished), unfinished
            )
        for stream in list(self._streams):
            stream.close()
        return CloseReport(unfinished)

    def close(self) -> None:
        """Stop accepting events and subscriptions (for programs without an event loop)."""
        self._closed = True
        for stream in list(self._streams):
            stream.close()

    @property
    def closed(self) -> bool:
        """Whether the bus has stopped accepting events."""
        return self._closed

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
        return f"<Bus {state} subscriptions={len(self._subs)}>"


_RECORDER_PRIORITY = 2**62
_LOCAL: Any = "\x00local"  # group= of subscriptions that stay in the process
_NO_LOOP = (
    "async handler {} has no running event loop to run on; publish from inside asyncio or "
    "start the bus with 'async with Bus() as bus' first"
)


def _order(sub: Subscription[Any]) -> tuple[int, int]:
    return (-sub.priority, sub.id)


def _outcome(item: HandlerOutcome | tuple[Subscription[Any], asyncio.Task[Any]]) -> HandlerOutcome:
    if isinstance(item, HandlerOutcome):
        return item
    sub, task = item
    if task.cancelled():
        return HandlerOutcome(sub.name, error=asyncio.CancelledError())
    exc = task.exception()
    return (
        HandlerOutcome(sub.name, error=exc)
        if exc is not None
        else HandlerOutcome(sub.name, task.result())
    )
