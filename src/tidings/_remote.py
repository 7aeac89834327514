"""The bus's side of a transport: ``Bus(transport=...)``.

With a transport, every event a bus publishes goes to the server, and every subscription
(except those to dead letters and :meth:`Bus.record`, which stay in the process) becomes a
transport subscription: the handlers of one process that share a pattern and a group share
one transport subscription, and receive each event from the server in the bus's order
(priority, then age), each handler's error isolated. A handler that raises makes the event
come back with backoff, and only the handlers that failed run again; after the transport's
``max_deliver`` attempts the event goes to the transport's dead letters and a
:class:`~tidings.DeadLetter` is published in the process, as on a bus without transport.

:meth:`Bus.publish` hands the envelope to an outbox that sends it pipelined (it returns at
once). A refusal known before it returns (the transport's
:meth:`~tidings.transports.base.Transport.check_envelope`: for NATS, an event above the
server's ``max_payload``) raises :class:`~tidings.PublishError` from ``publish``, before the
store's write-ahead append. A failure that comes later (the server refuses or never
acknowledges it, the bus closes first) is logged once, counted (``publish_failures``, and
the ``tidings_publish_failures_total`` metric), and published in the process as a
:class:`~tidings.DeadLetter` whose ``handler`` is ``"tidings.publish"`` and whose
``envelope`` can be published again; unless the transport was given its own
``on_publish_error``, which then gets it instead. :meth:`Bus.emit` returns when the server has stored
the event and raises :class:`~tidings.PublishError` if it did not (or
:class:`~tidings.PublishOutcomeUnknownError` if the transport cannot tell).
:meth:`Bus.flush` (:meth:`Remote.acknowledged`) waits until the server acknowledged every
event published so far and raises the typed error of the first that failed since the last
call that returned (each failure is also reported as above): ``publish`` many, then
``flush``, is the pipelined way to publish with acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Protocol

from tidings.exceptions import (
    LoopNotRunningError,
    PublishError,
    PublishOutcomeUnknownError,
    TransportError,
)
from tidings.observability.logs import log_fields
from tidings.subscription import SKIP, TASK, Subscription
from tidings.transports._consumer import error_reason
from tidings.transports.base import (
    Message,
    PublishAck,
    PublishErrorHook,
    Transport,
    TransportSubscription,
)

if TYPE_CHECKING:
    from tidings._ports import BusPort
    from tidings.event import Envelope
    from tidings.routing import Route

__all__ = ("ForwardHook", "HandlerFailedError", "Remote")

logger = logging.getLogger("tidings")

PUBLISH_FAILED = "tidings.publish"
"""The ``handler`` of the :class:`~tidings.DeadLetter` of an event that was not published."""

_POSITION_LIMIT = 2**63
"""A stream position a store keeps is below this (a signed 64-bit column)."""

_REMEMBERED = 10_000
"""How many partly handled events remember which handlers already succeeded."""

_NAMED = 256
"""How many of the latest publish failures :meth:`Remote.acknowledged` can name."""


class HandlerFailedError(Exception):
    """One or more handlers of a remote event failed; the event is retried for them."""

    def __init__(self, failures: list[tuple[Subscription[Any], BaseException]]) -> None:
        names = ", ".join(f"{sub.name} ({type(exc).__name__}: {exc})" for sub, exc in failures)
        super().__init__(names)
        self.tidings_handler = failures[0][0].name
        self.tidings_reason = error_reason(failures[0][1])
        self.failures = failures


class ForwardHook(Protocol):
    """What a store-and-forward carrier (:mod:`tidings._carrier`) hears of the outbox."""

    def sent(self, env: Envelope[Any], future: asyncio.Future[PublishAck]) -> None:
        """``env`` was handed to the transport; ``future`` settles with its outcome."""

    def keeps(self, env: Envelope[Any], exc: BaseException) -> bool:
        """Whether ``env``'s failure leaves it in the log to forward later (not reported)."""


class _Entry:
    """The bus subscriptions sharing one transport subscription (one pattern and group)."""

    __slots__ = ("group", "pattern", "ready", "sub", "subs")

    def __init__(self, pattern: str, group: str | None) -> None:
        self.pattern = pattern
        self.group = group
        self.subs: tuple[Subscription[Any], ...] = ()
        self.sub: TransportSubscription | None = None
        self.ready: asyncio.Task[None] | None = None


class Remote:
    """Connects a :class:`~tidings.Bus` to a :class:`~tidings.transports.Transport`; the
    :class:`~tidings._ports.Carrier` of a bus with a transport and no store."""

    def __init__(self, bus: BusPort, transport: Transport, clock: Any) -> None:
        self.bus = bus
        self.transport = transport
        transport.clock = clock  # received times merge into the bus's clock
        hook = transport.on_publish_error
        if hook is None:
            transport.on_publish_error = self._publish_failed
        else:  # the transport's own hook gets the failure; acknowledged() counts it too
            transport.on_publish_error = self._counting(hook)
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        self._lock = threading.Lock()
        # (pattern, group, event id) -> ids of the subscriptions that handled it: one event
        # reaches each transport subscription of the process separately.
        self._succeeded: OrderedDict[tuple[str, str | None, str], set[int]] = OrderedDict()
        self._dedupe: dict[Subscription[Any], str] = {}
        self._outbox: deque[Envelope[Any]] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._pump: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closing: asyncio.Future[None] | None = None
        self._stopped = False
        """The outbox stopped (the bus is closing): nothing queued is sent any more."""
        self.publish_failures = 0
        self._failures = 0
        """Publishes that failed (every one: also those a hook of the transport's own got)."""
        self._first_failures: deque[tuple[int, Envelope[Any], BaseException]] = deque(maxlen=_NAMED)
        """The latest failures, numbered (for the error :meth:`acknowledged` raises)."""
        self._refused: tuple[int, Envelope[Any], BaseException] | None = None
        """The latest failure that is not a :class:`PublishOutcomeUnknownError`, numbered
        (the error of :meth:`acknowledged` is a PublishError also when it is older than
        the failures remembered)."""
        self._checked = 0
        """Failures up to which an :meth:`acknowledged` call that returned has checked."""
        self.forwarding: ForwardHook | None = None  # set by a store-and-forward carrier

    # ------------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing starts when the bus is bound to a loop: :meth:`connect` does."""

    async def connect(self) -> None:
        """Start the transport, the outbox and every subscription made so far."""
        if not self._started:
            self._loop = asyncio.get_running_loop()
            await self.transport.start()
            self._pump = asyncio.create_task(self._run_outbox(), name="tidings:outbox")
            self._started = True
            for entry in list(self._entries.values()):
                self._open(entry)
        await self.ready()

    async def ready(self) -> None:
        """Wait until every transport subscription asked for so far is live."""
        pending = [e.ready for e in self._entries.values() if e.ready is not None]
        if pending:
            await asyncio.gather(*pending)

    async def disconnect(self, timeout: float) -> None:
        """Finish in-flight handlers, send the outbox, wait for acks, close the transport.

        Every event the outbox did not hand to the transport in time (the one it was sending
        included) is reported as failed with a :class:`~tidings.PublishError`; the
        transport reports those it took and the server did not acknowledge. Idempotent: a
        second call (also after the first was cancelled) waits for the same close, which a
        cancelled caller does not interrupt.
        """
        if not self._started:
            return
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(timeout))
        await asyncio.shield(self._closing)

    async def _close(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for entry in list(self._entries.values()):
            if entry.ready is not None:
                await asyncio.gather(entry.ready, return_exceptions=True)
            if entry.sub is not None:
                await entry.sub.cancel(max(deadline - loop.time(), 0.1))
        if self._outbox:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), max(deadline - loop.time(), 0.1))
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        self._stopped = True  # what is queued from now on is reported at once (_enqueue)
        unsent = len(self._outbox)
        for env in self._outbox:
            self._never_sent(env)
        self._outbox.clear()
        self._drained.set()  # a flush waiting for the outbox: what was left is reported
        try:
            await self.transport.wait_acknowledged(max(deadline - loop.time(), 0.1))
        except TimeoutError:
            logger.warning("bus closed with publishes still unacknowledged", extra=log_fields())
        await self.transport.aclose(max(deadline - loop.time(), 0.1))
        if unsent and self.forwarding is not None:
            logger.warning(
                "bus closed with %d event(s) not yet forwarded; they stay in the log and "
                "are forwarded when a bus starts on it again",
                unsent,
                extra=log_fields(),
            )
        elif unsent:
            logger.error("bus closed with %d event(s) never sent", unsent, extra=log_fields())

    async def settle(self, deadline: float) -> None:
        """Nothing deferred to settle: :meth:`disconnect` sent the outbox."""

    async def aclose(self, deadline: float) -> list[str]:
        """Nothing left to close after :meth:`disconnect`; nothing unfinished."""
        return []

    def close_sync(self) -> None:
        """Nothing closes from synchronous code: :meth:`disconnect` does, on the loop."""

    async def flush(self) -> None:
        """Nothing to flush: no store."""

    def together(self) -> None:
        """No batches: each publish is sent on its own."""

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self, sub: Subscription[Any], group: str | None, *, dedupe: str | None = None
    ) -> None:
        """Add ``sub`` to the transport subscription of its pattern and group.

        ``dedupe``: record each event id ``sub`` handled in the bus's store under this
        consumer name, and skip events already recorded (``idempotent=True``).
        """
        if dedupe is not None:
            self._dedupe[sub] = dedupe
        with self._lock:
            key = (sub.pattern, group)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(sub.pattern, group)
            entry.subs = tuple(sorted((*entry.subs, sub), key=lambda s: (-s.priority, s.id)))
        if self._started and entry.sub is None and entry.ready is None:
            self._call_in_loop(self._open, entry)

    def unsubscribe(self, sub: Subscription[Any]) -> bool:
        """Remove ``sub``, if it is carried here; the last one out ends the transport
        subscription. Whether it was carried here."""
        self._dedupe.pop(sub, None)
        with self._lock:
            for key, entry in list(self._entries.items()):
                if sub in entry.subs:
                    entry.subs = tuple(s for s in entry.subs if s is not sub)
                    if not entry.subs:
                        del self._entries[key]
                        self._call_in_loop(self._close_entry, entry)
                    return True
        return False

    def subscriptions(self) -> tuple[Subscription[Any], ...]:
        """Every bus subscription carried by the transport."""
        return tuple(s for e in self._entries.values() for s in e.subs)

    def _open(self, entry: _Entry) -> None:
        if entry.ready is None and entry.sub is None:
            entry.ready = asyncio.get_running_loop().create_task(self._subscribe(entry))

    async def _subscribe(self, entry: _Entry) -> None:
        payload_type = next((s.event_type for s in entry.subs if s.event_type is not None), None)

        async def deliver(message: Message) -> None:
            observer = self.bus.observer
            if observer is None:
                await self._dispatch(entry, message)
            else:
                with observer.delivering(message.attempt, entry.group, message.body_size):
                    await self._dispatch(entry, message)

        entry.sub = await self.transport.subscribe(
            entry.pattern,
            deliver,
            group=entry.group,
            payload_type=payload_type,
            name=entry.subs[0].name if len(entry.subs) == 1 else f"bus:{entry.pattern}",
        )
        entry.ready = None

    def _close_entry(self, entry: _Entry) -> None:
        async def close() -> None:
            if entry.ready is not None:
                await asyncio.gather(entry.ready, return_exceptions=True)
            if entry.sub is not None:
                await entry.sub.cancel()

        if self._started:
            asyncio.get_running_loop().create_task(close())

    def _call_in_loop(self, func: Any, entry: _Entry) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            func(entry)
        else:
            loop.call_soon_threadsafe(func, entry)

    # ------------------------------------------------------------------ delivering

    async def _dispatch(self, entry: _Entry, message: Message) -> None:
        env = message.envelope
        payload_type = type(env.payload)
        memo = (entry.pattern, entry.group, env.id)
        succeeded = self._succeeded.pop(memo, None)
        failures: list[tuple[Subscription[Any], BaseException]] = []
        for sub in entry.subs:
            if succeeded is not None and sub.id in succeeded:
                continue
            if not sub.active or not sub.matches(env.topic, payload_type):
                continue
            dedupe = self._dedupe.get(sub)
            try:
                if dedupe is not None and await self._handled_before(dedupe, env):
                    continue
                if not sub.accepts(env):
                    continue
                result = sub.call(sub.argument(env))
                if result is SKIP:
                    continue
                if sub.kind == TASK and await result is SKIP:
                    continue  # dropped by a middleware
                if dedupe is not None:
                    await self._record_handled(dedupe, env, message)
            except Exception as exc:
                failures.append((sub, exc))
                continue
            sub.record_delivered()
            if succeeded is None:
                succeeded = set()
            succeeded.add(sub.id)
        if not failures:
            return
        policy = entry.sub.policy if entry.sub is not None else self.transport.policy
        final = message.attempt >= policy.max_deliver
        for failed_sub, error in failures:
            self.bus.failures.report(failed_sub, env, error, attempts=message.attempt, final=final)
        if succeeded and not final:
            self._succeeded[memo] = succeeded
            if len(self._succeeded) > _REMEMBERED:
                self._succeeded.popitem(last=False)
        raise HandlerFailedError(failures)

    async def _handled_before(self, consumer: str, env: Envelope[Any]) -> bool:
        store = self.bus.store
        return store is not None and await store.was_handled(consumer, env.id)

    async def _record_handled(self, consumer: str, env: Envelope[Any], message: Message) -> None:
        store = self.bus.store
        if store is not None:
            # A stream position where it fits the stores' 64-bit column (Kafka's sequences,
            # partition and offset together, are wider: then 0, as the dedupe middleware).
            position = message.sequence if 0 < (message.sequence or 0) < _POSITION_LIMIT else 0
            await store.commit(consumer, position, handled_ids=(env.id,))

    # ------------------------------------------------------------------ publishing

    def check_send(self, env: Envelope[Any] | None = None) -> asyncio.AbstractEventLoop:
        """The loop :meth:`send` hands events to, after checking that the transport would
        not refuse ``env`` (the bus checks before its write-ahead append, so that an event
        the transport refuses is not logged either).

        Raises:
            LoopNotRunningError: the bus was not started in asyncio, or its loop is closed.
            PublishError: the transport would refuse ``env`` (too large); nothing was sent.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            raise LoopNotRunningError(
                "a bus with a transport publishes from asyncio: start it first with "
                "'async with Bus(transport=...) as bus'"
            )
        if env is not None:
            self.transport.check_envelope(env)
        return loop

    def check_publish(self, env: Envelope[Any] | None = None) -> None:
        """Raise unless :meth:`publish` can run (and the transport would take ``env``).

        Raises:
            LoopNotRunningError: the bus was not started.
            PublishError: the transport would refuse ``env`` (too large); nothing was sent.
        """
        if not self._started:
            raise LoopNotRunningError(
                "a bus with a transport must be started: 'async with Bus(transport=...)'"
            )
        if env is not None:
            self.transport.check_envelope(env)

    def write_ahead(self, route: Route, env: Envelope[Any]) -> bool:
        """Send a published ``env`` (no store to append it to first); dispatch it now.

        Raises:
            LoopNotRunningError, PublishError: as :meth:`check_send`; nothing was sent.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self.check_send()  # raises LoopNotRunningError
        self.transport.check_envelope(env)
        if self.bus.loop_thread == threading.get_ident():
            self._enqueue(env)  # as send(), without checking the loop again
        else:
            loop.call_soon_threadsafe(self._enqueue, env)
        return True

    async def carry(self, env: Envelope[Any]) -> None:
        """Publish an emitted ``env`` and wait until the server stored it (see
        :meth:`publish`)."""
        await self.publish(env)

    def send(self, env: Envelope[Any]) -> None:
        """Queue ``env`` for the server (thread-safe); it is sent pipelined, in order.

        Raises:
            LoopNotRunningError: as :meth:`check_send`.
        """
        loop = self.check_send()
        if self.bus.loop_thread == threading.get_ident():
            self._enqueue(env)
        else:
            loop.call_soon_threadsafe(self._enqueue, env)

    def preload(self, envs: list[Envelope[Any]]) -> None:
        """Queue ``envs`` ahead of everything published after (before :meth:`connect`:
        events a store-and-forward carrier recovered from its log)."""
        self._outbox.extend(envs)
        if envs:
            self._drained.clear()
            self._wake.set()

    def _enqueue(self, env: Envelope[Any]) -> None:
        outbox = self._outbox
        outbox.append(env)
        if len(outbox) == 1:  # else the pump has yet to take the others: it takes this too
            if self._stopped:  # published while the bus closes, after the outbox stopped
                outbox.clear()
                self._never_sent(env)
                return
            self._drained.clear()
            self._wake.set()

    def _never_sent(self, env: Envelope[Any]) -> None:
        """Report ``env``, left in the outbox when it stopped: never sent (with store and
        forward it stays in the log: forwarded when a bus starts on it again)."""
        if self.forwarding is not None:
            return
        error = PublishError(
            f"event {env.id} on {env.topic!r} was not stored and will not be: the bus "
            "closed before it was sent",
            event_id=env.id,
            topic=env.topic,
        )
        self._publish_failed(env, error)

    async def publish(self, env: Envelope[Any]) -> PublishAck:
        """Send ``env`` and wait until the server stored it.

        Raises:
            LoopNotRunningError: as :meth:`check_publish`.
            PublishError: the server did not store it.
            PublishOutcomeUnknownError: the server may have stored it.
        """
        self.check_publish()
        await self.ready()
        return await self.transport.publish(env)

    async def _run_outbox(self) -> None:
        outbox, wake, send = self._outbox, self._wake, self.transport.send
        while True:
            while outbox:
                env = outbox[0]  # taken off once sent: if cancelled, aclose reports it
                try:
                    future = await send(env)
                except Exception as exc:
                    self._publish_failed(env, exc)
                    if self.forwarding is not None:  # settled too: refused before it left
                        future = asyncio.get_running_loop().create_future()
                        future.set_exception(exc)
                        self.forwarding.sent(env, future)
                else:
                    if self.forwarding is not None:
                        self.forwarding.sent(env, future)
                outbox.popleft()
            self._drained.set()
            wake.clear()
            await wake.wait()

    async def acknowledged(self) -> None:
        """Wait until every event published so far was handed to the transport and the
        server acknowledged it; raise if any failed since the last call that returned.

        Raises:
            PublishError: an event was not stored (the first one that failed, named; how
                many failed in all).
            PublishOutcomeUnknownError: no :class:`~tidings.PublishError`, but an event's
                outcome is unknown (named).
        """
        if not self._started:
            return
        base = self._checked  # what the calls that returned before this one checked
        # One turn of the loop first: an event published from another thread before this
        # call is queued by a callback already scheduled (in order) on the loop.
        await asyncio.sleep(0)
        if self._outbox:
            self._wake.set()
            await self._drained.wait()
        # Not flush(): the count of failures it returns (and resets) is its caller's.
        await self.transport.wait_acknowledged()
        end = self._failures
        self._checked = max(self._checked, end)
        if end > base:
            named = [f for f in self._first_failures if f[0] >= base]
            refused = self._refused
            if refused is not None and refused[0] >= base and refused[0] < named[0][0]:
                named.insert(0, refused)  # a refusal the deque no longer holds
            raise _failed(end - base, named)

    def _counting(self, hook: PublishErrorHook) -> PublishErrorHook:
        """``hook``, after counting the failure for :meth:`acknowledged`."""

        def told(env: Envelope[Any], exc: BaseException) -> None:
            self._count_failure(env, exc)
            hook(env, exc)

        return told

    def _count_failure(self, env: Envelope[Any], exc: BaseException) -> None:
        failure = self._failures, env, exc
        self._first_failures.append(failure)
        if not isinstance(exc, PublishOutcomeUnknownError):
            self._refused = failure
        self._failures += 1

    def _publish_failed(self, env: Envelope[Any], exc: BaseException) -> None:
        """Report a publish that failed after ``publish`` returned: logged once (the error
        names the event and its topic), counted, and dead-lettered with its envelope; unless
        a store-and-forward carrier keeps it in the log to forward later."""
        if self.forwarding is not None and self.forwarding.keeps(env, exc):
            return
        self._count_failure(env, exc)
        self.publish_failures += 1
        logger.error("%s", exc, extra=log_fields(env))
        self.bus.publish_failed(env, PUBLISH_FAILED, exc)


def _failed(count: int, named: list[tuple[int, Envelope[Any], BaseException]]) -> TransportError:
    """The error :meth:`Remote.acknowledged` raises for ``count`` failures, of which
    ``named`` are the latest (numbered, oldest first; the latest refusal among them if there
    was one): a :class:`PublishError` naming the first event not stored, else a
    :class:`PublishOutcomeUnknownError` naming the first whose outcome is unknown."""
    refused = [
        (env, exc) for _, env, exc in named if not isinstance(exc, PublishOutcomeUnknownError)
    ]
    unknown = [(env, exc) for _, env, exc in named if isinstance(exc, PublishOutcomeUnknownError)]
    more = f" ({count} publishes failed in all)" if count > 1 else ""
    error: TransportError
    if refused:
        env, exc = refused[0]
        error = PublishError(
            f"not every event published was stored: {exc}{more}",
            event_id=env.id,
            topic=env.topic,
        )
    else:
        env, exc = unknown[0]
        error = PublishOutcomeUnknownError(
            f"not every event published is known to be stored: {exc}{more}",
            event_id=env.id,
            topic=env.topic,
            envelope=env,
        )
    error.__cause__ = exc
    return error
