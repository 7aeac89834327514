"""The consuming side every transport shares: prefetch, workers, settlement, dead letters.

A transport supplies how to fetch raw messages, how to decode one, how to read its attempt
and sequence and how to dead-letter it; :class:`Consumer` does the rest, the same way for
every transport (see :mod:`tidings.transports.base` for the policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import ClockSkewError
from tidings.observability.logs import log_fields
from tidings.transports.base import (
    DeliveryPolicy,
    Message,
    MessageHandler,
    SubscriptionStats,
    TransportSubscription,
)

__all__ = ("Consumer", "RawMessage", "error_reason")

logger = logging.getLogger("tidings.transports")

DECODE_HANDLER = "tidings.decode"
"""The handler name written in the dead letters of undecodable messages."""


class RawMessage(Protocol):
    """A message as a transport received it."""

    @property
    def subject(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str] | None: ...
    @property
    def data(self) -> bytes: ...
    async def ack(self) -> None: ...
    async def nak(self, delay: float | None = None) -> None: ...
    async def in_progress(self) -> None: ...
    async def term(self) -> None: ...


Fetch = Callable[[int, float], Awaitable[list[Any]]]
"""``fetch(batch, timeout)``: up to ``batch`` raw messages; ``[]`` when none came in time."""
DeadLetterSink = Callable[[Any, str, str, int], Awaitable[None]]
"""``dead_letter(raw, reason, handler, attempts)``: store it; raise if it was not stored."""
GiveUpHook = Callable[[Envelope[Any] | None, str, str, int], None]
"""``on_give_up(envelope, reason, handler, attempts)``: told of every dead letter."""
Held = Callable[[], Iterable[Any]]
"""``held()``: the raw messages a transport fetched but has not handed over yet."""
_Queued = tuple[Any, int, int, Envelope[Any] | None, Exception | None]
"""A message waiting for a worker: ``(raw, attempt, sequence, envelope, error)``; envelope
and error both ``None`` while it is not decoded yet."""

_ABSENT: Any = object()


def error_reason(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line, at most 1,000 characters."""
    text = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    return text if len(text) <= 1000 else text[:997] + "..."


class Consumer(TransportSubscription):
    """Runs one subscription: a fetch loop, ``policy.workers`` workers, heartbeats.

    Messages are partitioned to workers by key; each worker is a task of its own that
    handles its messages one at a time in order (a handler runs in that task, so
    ``asyncio.timeout``, task groups and context variables work in it as in any task).

    Every message held in memory unsettled gets in-progress heartbeats (with
    ``policy.heartbeats``): the ones running, the ones queued for a worker and the ones the
    transport buffered (``held``), so the server does not redeliver what is waiting here. A
    redelivered copy of a message (same stream sequence) that is still held here is dropped;
    one of a message acked or terminated here is acked or terminated again; neither is
    handled again or dead-lettered. Deliveries the transport gave back unseen
    (:meth:`given_back`) do not count toward ``max_deliver``. A message that cannot be taken in (its decoding, or
    merging its time into the clock, raised) is dead-lettered with the reason; an unexpected
    error in the fetch loop is logged and the loop goes on.

    Args:
        pattern, group, name, policy: as on the subscription.
        handler: the user's message handler.
        fetch: fetches raw messages (see :data:`Fetch`); it may raise, the loop retries.
        decode: the envelope of a raw message; raises :class:`~tidings.DecodeError`.
        meta: ``(attempt, sequence)`` of a raw message.
        dead_letter: stores a dead letter, or ``None`` to drop and log instead.
        clock: merges received times (receive rule).
        on_give_up: told of each dead letter, after it is stored.
        on_cancel: called once the subscription has stopped (to release server state).
        held: the messages the transport buffered but has not handed over (see
            :data:`Held`), heartbeated with the rest; ``None`` when it buffers none.
        ack_now: acks a raw message at once, in place of ``await raw.ack()``, for a
            transport whose ack is bookkeeping of its own (no I/O, never raises).
        leases: ``False`` when messages hold no lease that in-progress heartbeats renew
            (their ``in_progress`` does nothing): no heartbeats are sent, whatever
            ``policy.heartbeats`` says.
    """

    def __init__(
        self,
        *,
        pattern: str,
        group: str | None,
        name: str,
        policy: DeliveryPolicy,
        handler: MessageHandler,
        fetch: Fetch,
        decode: Callable[[Any], Envelope[Any]],
        meta: Callable[[Any], tuple[int, int]],
        dead_letter: DeadLetterSink | None,
        clock: HybridClock,
        on_give_up: GiveUpHook | None = None,
        on_cancel: Callable[[], Awaitable[None]] | None = None,
        fetch_timeout: float = 1.0,
        held: Held | None = None,
        ack_now: Callable[[Any], None] | None = None,
        leases: bool = True,
    ) -> None:
        self.pattern = pattern
        self.group = group
        self.name = name
        self.policy = policy
        self._handler = handler
        self._fetch = fetch
        self._decode = decode
        self._meta = meta
        self._dead_letter = dead_letter
        self._clock = clock
        self._on_give_up = on_give_up
        self._on_cancel = on_cancel
        self._fetch_timeout = fetch_timeout
        self._transport_held = held
        self._ack_now = ack_now
        self._heartbeats = policy.heartbeats and leases
        """Whether in-progress heartbeats are sent (not when messages hold no lease)."""
        # Fetch once a quarter of the prefetch is free; an exclusive group's member as soon
        # as one slot is: each of its pulls renews its pin, so a busy member keeps the group
        # as long as no single handler call outlasts ``takeover``.
        exclusive = group is not None and policy.exclusive
        self._min_batch = 1 if exclusive else max(1, policy.prefetch // 4)
        self._queues: list[deque[_Queued]] = [deque() for _ in range(policy.workers)]
        # Stream sequence -> the raw message while queued, None while a worker has it
        # (with heartbeats; without, it stays the raw message: nothing reads it then).
        self._held: dict[int, Any] = {}
        # Stream sequence -> "ack", "nak" or "term": how recent messages were settled here,
        # in two generations of plain dicts (an OrderedDict's upkeep cost about 2,800
        # instructions per message): settlements go into ``_settled``; once it holds
        # ``_remember`` of them it becomes ``_settled_before`` (the older one is emptied and
        # becomes ``_settled``), so every settlement is remembered for at least the next
        # ``_remember`` ones. A lookup reads ``_settled`` first: it is the newer.
        self._settled: dict[int, str] = {}
        self._settled_before: dict[int, str] = {}
        self._remember = max(1024, 4 * policy.prefetch)
        # Stream sequence -> deliveries given back here without a handler call (see
        # :meth:`given_back`): they do not count toward ``max_deliver``.
        self._unhandled: OrderedDict[int, int] = OrderedDict()
        self._wakes = [asyncio.Event() for _ in range(policy.workers)]
        self._running: list[tuple[Message, float] | None] = [None] * policy.workers
        self._round_robin = itertools.cycle(range(policy.workers))
        self._room = asyncio.Event()
        self._starved = False
        """Whether the fetch loop waits for ``_room`` (set by releases only then)."""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._beats: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._cancelled = False
        self._delivered = 0
        self._acked = 0
        self._retried = 0
        self._dead = 0
        self._decode_errors = 0
        self._skew = 0
        self._duplicates = 0
        self._in_memory = 0
        self._max_in_memory = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start fetching and the workers."""
        for index in range(self.policy.workers):
            self._tasks.append(
                asyncio.create_task(self._work(index), name=f"tidings:{self.name}:worker{index}")
            )
        self._tasks.append(asyncio.create_task(self._fetch_loop(), name=f"tidings:{self.name}"))
        if self._heartbeats:
            self._schedule_heartbeat()

    async def cancel(self, timeout: float = 10.0) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._stop.set()
        fetcher = self._tasks.pop()
        fetcher.cancel()
        await asyncio.gather(fetcher, return_exceptions=True)
        # Give back what no worker has started: another consumer of the group takes it.
        for queue in self._queues:
            while queue:
                raw, _, sequence, _, _ = queue.popleft()
                await self._settle(raw.nak, None)
                self._release(sequence, "nak")
        for wake in self._wakes:
            wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "subscription %s closed with %d handler(s) unfinished after %.1fs; "
                    "their events will be redelivered",
                    self.name,
                    len(pending),
                    timeout,
                    extra=log_fields(None, self.name),
                )
                await asyncio.gather(*pending, return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._on_cancel is not None:
            try:
                await self._on_cancel()
            except Exception:
                logger.warning(
                    "releasing subscription %s failed",
                    self.name,
                    exc_info=True,
                    extra=log_fields(None, self.name),
                )

    def given_back(self, raw: Any) -> None:
        """Note that the transport gave a delivery of ``raw`` back to the server (nak)
        without handing it over, so no handler was called for it: the attempts counted
        against ``max_deliver`` here leave it out. Deliveries given back by another process
        cannot be told apart and count."""
        sequence = self._meta(raw)[1]
        if sequence:
            unhandled = self._unhandled
            unhandled[sequence] = unhandled.pop(sequence, 0) + 1
            if len(unhandled) > self._remember:
                unhandled.popitem(last=False)

    def stats(self) -> SubscriptionStats:
        return SubscriptionStats(
            delivered=self._delivered,
            acked=self._acked,
            retried=self._retried,
            dead_lettered=self._dead,
            decode_errors=self._decode_errors,
            clock_skew=self._skew,
            duplicates=self._duplicates,
            in_memory=self._in_memory,
            max_in_memory=self._max_in_memory,
        )

    # ------------------------------------------------------------------ fetching

    async def _fetch_loop(self) -> None:
        prefetch = self.policy.prefetch
        failures = 0
        while not self._stop.is_set():
            free = prefetch - self._in_memory
            if free < self._min_batch:
                self._room.clear()
                self._starved = True
                await self._room.wait()
                continue
            try:
                raws = await self._fetch(free, self._fetch_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(0.05 * 2 ** min(failures, 6), 2.0)
                logger.debug(
                    "fetch for %s failed (%r); retrying in %.2fs",
                    self.name,
                    exc,
                    delay,
                    extra=log_fields(None, self.name),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            failures = 0
            await self._take_in(raws)
            for queue, wake in zip(self._queues, self._wakes, strict=True):
                if queue:
                    wake.set()

    async def _take_in(self, raws: list[Any]) -> None:
        """Take in a fetched batch, leaving out redelivered copies (see :meth:`_duplicate`):
        queue each message for the worker it belongs to (by key, else in turn).

        With one worker, messages are queued undecoded (envelope and error ``None``): the
        worker decodes each right before its handler (:meth:`_work`), so that what a
        decoding makes (the envelope, the payload) lives only while it is handled, not
        while it waits, and the garbage collector does not promote a queue's worth of
        payloads to its older generations. With several, the key that picks the worker is
        needed now: the batch is decoded here and its times merged into the clock (once,
        with the latest, when none is refused)."""
        meta, held, decode = self._meta, self._held, self._decode
        # Either generation, whichever is which (an await below may swap them).
        settled, before = self._settled, self._settled_before
        workers = self.policy.workers
        lazy: list[_Queued] = []
        taken: list[tuple[int, _Queued]] = []
        latest, negative = -1, False
        for raw in raws:
            try:
                attempt, sequence = meta(raw)
                if (
                    sequence
                    and (sequence in held or sequence in settled or sequence in before)
                    and await self._duplicate(raw, sequence)
                ):
                    continue
            except Exception:
                self._not_taken_in(raw)
                continue
            if workers == 1:
                if sequence:
                    held[sequence] = raw
                lazy.append((raw, attempt, sequence, None, None))
                continue
            env: Envelope[Any] | None
            error: Exception | None = None
            try:
                env = decode(raw)
            except Exception as exc:  # undecodable, whatever the reason: dead-lettered
                env, error = None, exc
            if env is not None:
                if env.time > latest:
                    latest = env.time
                elif env.time < 0:
                    negative = True
            if env is not None and env.key is not None:
                index = hash(env.key) % workers
            else:
                index = next(self._round_robin)
            if sequence:
                held[sequence] = raw  # queued: heartbeated, and a copy of it is a duplicate
            taken.append((index, (raw, attempt, sequence, env, error)))
        count = len(lazy) + len(taken)
        self._delivered += count
        self._in_memory += count
        if self._in_memory > self._max_in_memory:
            self._max_in_memory = self._in_memory
        if lazy:
            self._queues[0].extend(lazy)
            return
        merged = False
        if latest >= 0 and not negative:
            with contextlib.suppress(Exception):  # refused: merged one by one below
                self._clock.update(latest)
                merged = True
        if not merged:  # each, to learn which the clock refuses (as _merge_time tells)
            taken = [(index, self._merge_time(queued)) for index, queued in taken]
        queues = self._queues
        for index, queued in taken:
            queues[index].append(queued)

    def _merge_time(self, queued: _Queued) -> _Queued:
        """Merge one message's time into the clock: a time the clock refuses as skewed is
        counted and logged (the event is handled); one it cannot merge at all makes the
        message undecodable (dead-lettered)."""
        raw, attempt, sequence, env, _ = queued
        if env is None:
            return queued
        error = self._merged(raw, env)
        return queued if error is None else (raw, attempt, sequence, None, error)

    def _merged(self, raw: Any, env: Envelope[Any]) -> Exception | None:
        """Merge ``env``'s time into the clock (see :meth:`_merge_time`): the error that
        makes the message undecodable, else ``None``."""
        try:
            self._clock.update(env.time)
        except Exception as exc:
            return self._not_merged(raw, env, exc)[1]
        return None

    def _not_taken_in(self, raw: Any) -> None:
        # Not taken in: the server redelivers it after ack_wait.
        logger.exception(
            "subscription %s could not take in a message on %s",
            self.name,
            getattr(raw, "subject", "?"),
            extra=log_fields(None, self.name),
        )

    def _skewed(self, env: Envelope[Any], subject: str, exc: ClockSkewError) -> None:
        """Count and log an event whose time the clock refused to merge (it is handled)."""
        self._skew += 1
        logger.warning("event %s on %s: %s", env.id, subject, exc, extra=log_fields(env, self.name))

    async def _duplicate(self, raw: Any, sequence: int) -> bool:
        """Whether ``raw`` is a copy of a message still held, acked or terminated here (a
        copy of a settled one is settled the same way again)."""
        if sequence in self._held:
            outcome = None
        else:
            outcome = self._settled.get(sequence)
            if outcome is None:
                outcome = self._settled_before.get(sequence)
                if outcome is None:
                    return False
            if outcome == "nak":  # the retry asked for
                self._settled.pop(sequence, None)
                self._settled_before.pop(sequence, None)
                return False
        self._duplicates += 1
        logger.debug(
            "subscription %s dropped a redelivered copy of stream sequence %d (%s)",
            self.name,
            sequence,
            "still held" if outcome is None else f"{outcome} sent",
            extra=log_fields(None, self.name),
        )
        if outcome is not None:
            await self._settle(raw.ack if outcome == "ack" else raw.term)
        return True

    def _release(self, sequence: int, outcome: str | None) -> None:
        self._in_memory -= 1
        if sequence:
            held = self._held
            if held:
                held.pop(sequence, None)
            if outcome is not None:
                if self._unhandled and outcome != "nak":
                    self._unhandled.pop(sequence, None)
                settled = self._settled
                settled[sequence] = outcome  # the newer generation: read first
                if len(settled) >= self._remember:
                    before = self._settled_before
                    before.clear()
                    self._settled, self._settled_before = before, settled
        if self._starved and self._in_memory <= self.policy.prefetch - self._min_batch:
            self._starved = False
            self._room.set()

    # ------------------------------------------------------------------ handling

    async def _work(self, index: int) -> None:
        """Handle the worker's queued messages one at a time, in order. The usual message
        (decodable, within ``max_deliver``, its handler returning) is handled inline, without
        a coroutine of its own; the others go through :meth:`_screen` and :meth:`_failed`."""
        queue, wake, stop = self._queues[index], self._wakes[index], self._stop
        held, running, handler = self._held, self._running, self._handler
        decode, update = self._decode, self._clock.update
        max_deliver, ack_now, beats = self.policy.max_deliver, self._ack_now, self._heartbeats
        # The clock's time after this worker's last merge (what ``update`` returned): every
        # later value of the clock is greater, so an event no later than it needs no merge
        # (the receive rule holds already; nor could the clock refuse it as skewed unless
        # the wall clock stepped back: it is no later than a time the clock reached). A
        # backlog of events published before the merge is merged once, not one by one.
        merged = -1
        while True:
            while queue:
                raw, attempt, sequence, env, error = queue.popleft()
                if beats and sequence:  # running: heartbeated as such, no longer as waiting
                    held[sequence] = None
                outcome = None
                try:
                    if env is None and error is None:  # decoded right before its handler
                        try:
                            env = decode(raw)
                            if not 0 <= env.time <= merged:
                                merged = update(env.time)
                        except Exception as exc:
                            env, error = self._not_merged(raw, env, exc)
                    if env is None or attempt > max_deliver:
                        outcome = await self._screen(raw, attempt, sequence, env, error)
                        if outcome is not None:
                            continue
                        assert env is not None
                    msg = Message(env, attempt, raw.subject, sequence, raw)
                    if beats:
                        running[index] = (msg, time.monotonic())
                    try:
                        await handler(msg)
                    except Exception as exc:
                        running[index] = None
                        outcome = await self._failed(msg, raw, exc)
                        continue
                    running[index] = None
                    outcome = msg.settled
                    if outcome is None:
                        outcome = msg.settled = "ack"
                        self._acked += 1
                        if ack_now is not None:
                            ack_now(raw)
                        else:
                            try:  # as _settle does, without a coroutine of its own
                                await raw.ack()
                            except Exception as exc:
                                self._unsettled(exc)
                    elif outcome == "ack":
                        self._acked += 1
                    elif outcome == "nak":
                        self._retried += 1
                finally:
                    self._release(sequence, outcome)
            if stop.is_set():
                return
            wake.clear()
            await wake.wait()

    def _not_merged(
        self, raw: Any, env: Envelope[Any] | None, exc: Exception
    ) -> tuple[Envelope[Any] | None, Exception | None]:
        """What a message is when its decoding (``env`` ``None``) or merging its time into
        the clock raised ``exc``: a skewed time is counted and logged (the event is handled);
        anything else makes it undecodable (dead-lettered)."""
        if env is None:
            return None, exc
        if isinstance(exc, ClockSkewError):
            self._skewed(env, raw.subject, exc)
            return env, None
        return None, exc

    async def _screen(
        self,
        raw: Any,
        attempt: int,
        sequence: int,
        env: Envelope[Any] | None,
        error: Exception | None,
    ) -> str | None:
        """Dead-letter a message that is undecodable (``env`` ``None``, ``error`` why) or was
        delivered more than ``max_deliver`` times to handlers: how it was settled; ``None``
        when its handler is to run."""
        if env is None:
            assert error is not None
            self._decode_errors += 1
            return await self._give_up(raw, None, error_reason(error), DECODE_HANDLER, attempt)
        policy = self.policy
        handled = self._handled(attempt, sequence)
        if handled > policy.max_deliver:
            reason = (
                f"DeliveriesExhausted: delivered {handled} times, more than max_deliver="
                f"{policy.max_deliver}; the handling process stopped before settling it"
            )
            return await self._give_up(raw, env, reason, self.name, attempt)
        return None

    def _handled(self, attempt: int, sequence: int) -> int:
        """Deliveries that may have reached a handler (this process gave none of them back)."""
        return attempt - self._unhandled.get(sequence, 0) if self._unhandled else attempt

    async def _failed(self, msg: Message, raw: Any, exc: Exception) -> str | None:
        """Settle a message whose handler raised ``exc``: retried, or dead-lettered once it
        was delivered ``max_deliver`` times or the error is permanent; how it was settled."""
        env, policy = msg.envelope, self.policy
        if msg.settled is not None:
            logger.warning(
                "handler %s raised after settling event %s (%s): %r",
                self.name,
                env.id,
                msg.settled,
                exc,
                extra=log_fields(env, self.name),
            )
        elif self._handled(msg.attempt, msg.sequence) >= policy.max_deliver or getattr(
            exc, "tidings_permanent", False
        ):
            # a permanent error (a schema violation...) would fail every retry alike
            msg.settled = "term"
            reason = getattr(exc, "tidings_reason", None) or error_reason(exc)
            handler = getattr(exc, "tidings_handler", None) or self.name
            return await self._give_up(raw, env, reason, handler, msg.attempt)
        else:
            msg.settled = "nak"
            self._retried += 1
            await self._settle(raw.nak, policy.retry_delay(msg.attempt))
        return msg.settled

    async def _give_up(
        self, raw: Any, env: Envelope[Any] | None, reason: str, handler: str, attempts: int
    ) -> str:
        """Dead-letter ``raw`` and terminate it ("term"), or nak it when the dead letter could
        not be stored ("nak")."""
        if self._dead_letter is None:
            logger.error(
                "dropping %s after %d attempt(s) in %s: %s",
                "message" if env is None else f"event {env.id}",
                attempts,
                handler,
                reason,
                extra=log_fields(env, handler),
            )
            await self._settle(raw.term)
            return "term"
        try:
            await self._dead_letter(raw, reason, handler, attempts)
        except Exception as exc:
            # Not stored: keep the message, so it is retried rather than lost.
            logger.error(
                "could not dead-letter a message on %s (%r); it will be retried",
                raw.subject,
                exc,
                extra=log_fields(env, handler),
            )
            await self._settle(raw.nak, self.policy.retry_delay(attempts))
            return "nak"
        self._dead += 1
        await self._settle(raw.term)
        if self._on_give_up is not None:
            try:
                self._on_give_up(env, reason, handler, attempts)
            except Exception:
                logger.exception(
                    "dead-letter hook failed for a message on %s",
                    raw.subject,
                    extra=log_fields(env, handler),
                )
        return "term"

    async def _settle(self, settle: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await settle(*args)
        except Exception as exc:
            self._unsettled(exc)

    def _unsettled(self, exc: Exception) -> None:
        # The server redelivers what it did not hear about: nothing is lost.
        logger.warning(
            "could not settle a message for %s: %r",
            self.name,
            exc,
            extra=log_fields(None, self.name),
        )

    # ------------------------------------------------------------------ heartbeats

    def _schedule_heartbeat(self) -> None:
        interval = self.policy.ack_wait / 3
        self._heartbeat = asyncio.get_running_loop().call_later(interval, self._beat, interval)

    def _beat(self, interval: float) -> None:
        if self._cancelled and not any(self._running):
            return
        now = time.monotonic()
        running = [r[0] for r in self._running if r is not None and now - r[1] >= interval * 0.5]
        waiting = [raw for raw in self._held.values() if raw is not None]
        if self._transport_held is not None:
            waiting.extend(self._transport_held())
        if running or waiting:
            task = asyncio.get_running_loop().create_task(self._send_beats(running, waiting))
            self._beats.add(task)
            task.add_done_callback(self._beats.discard)
        self._schedule_heartbeat()

    async def _send_beats(self, running: list[Message], waiting: list[Any]) -> None:
        for msg in running:
            await self._settle(msg.in_progress)  # nothing once settled
        for raw in waiting:
            if self._waiting(raw):  # checked right before: never after its settlement
                await self._settle(raw.in_progress)

    def _waiting(self, raw: Any) -> bool:
        """Whether ``raw`` waits here unsettled: queued, or still in the transport's buffer."""
        sequence = self._meta(raw)[1]
        state = self._held.get(sequence, _ABSENT)
        return sequence != 0 and (
            state is raw
            or (
                state is _ABSENT
                and sequence not in self._settled
                and sequence not in self._settled_before
            )
        )
