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
        # Fetch once a quarter of the prefetch is free; an exclusive group's member as soon
        # as one slot is: each of its pulls renews its pin, so a busy member keeps the group
        # as long as no single handler call outlasts ``takeover``.
        exclusive = group is not None and policy.exclusive
        self._min_batch = 1 if exclusive else max(1, policy.prefetch // 4)
        self._queues: list[deque[_Queued]] = [deque() for _ in range(policy.workers)]
        # Stream sequence -> the raw message while queued, None while a worker has it.
        self._held: dict[int, Any] = {}
        # Stream sequence -> "ack", "nak" or "term": how recent messages were settled here.
        self._settled: OrderedDict[int, str] = OrderedDict()
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
        if self.policy.heartbeats:
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
            taken = await self._take_in(raws)
            if taken:
                self._queue(taken)
            for queue, wake in zip(self._queues, self._wakes, strict=True):
                if queue:
                    wake.set()

    async def _take_in(self, raws: list[Any]) -> list[tuple[int, _Queued]]:
        """Take in a fetched batch, leaving out redelivered copies (see :meth:`_duplicate`):
        each message with the index of the worker it belongs to (by key, else in turn).

        With one worker, messages are queued undecoded (envelope and error ``None``): the
        worker decodes each right before its handler (:meth:`_decoded`), so that what a
        decoding makes (the envelope, the payload) lives only while it is handled, not
        while it waits, and the garbage collector does not promote a queue's worth of
        payloads to its older generations. With several, the key that picks the worker is
        needed now: the batch is decoded here and its times merged into the clock (once,
        with the latest, when none is refused)."""
        meta, held, settled, decode = self._meta, self._held, self._settled, self._decode
        workers = self.policy.workers
        taken: list[tuple[int, _Queued]] = []
        latest, negative = -1, False
        for raw in raws:
            try:
                attempt, sequence = meta(raw)
                if (
                    sequence
                    and (sequence in held or sequence in settled)
                    and await self._duplicate(raw, sequence)
                ):
                    continue
            except Exception:
                self._not_taken_in(raw)
                continue
            if workers == 1:
                if sequence:
                    held[sequence] = raw
                taken.append((0, (raw, attempt, sequence, None, None)))
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
        count = len(taken)
        self._delivered += count
        self._in_memory += count
        if self._in_memory > self._max_in_memory:
            self._max_in_memory = self._in_memory
        if workers == 1:
            return taken
        if latest >= 0 and not negative:
            with contextlib.suppress(Exception):  # refused: merged one by one below
                self._clock.update(latest)
                return taken
        # Merge each, to learn which the clock refuses (as _merge_time tells).
        return [(index, self._merge_time(queued)) for index, queued in taken]

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
        except ClockSkewError as exc:
            self._skewed(env, raw.subject, exc)
        except Exception as exc:
            return exc
        return None

    def _decoded(self, raw: Any) -> tuple[Envelope[Any] | None, Exception | None]:
        """Decode a message queued undecoded and merge its time into the clock: its
        envelope, or ``None`` and why it cannot be taken in."""
        try:
            env = self._decode(raw)
        except Exception as exc:  # undecodable, whatever the reason: dead-lettered
            return None, exc
        error = self._merged(raw, env)
        return (env, None) if error is None else (None, error)

    def _not_taken_in(self, raw: Any) -> None:
        # Not taken in: the server redelivers it after ack_wait.
        logger.exception(
            "subscription %s could not take in a message on %s",
            self.name,
            getattr(raw, "subject", "?"),
            extra=log_fields(None, self.name),
        )

    def _queue(self, taken: list[tuple[int, _Queued]]) -> None:
        """Queue a decoded batch for the workers (woken by the fetch loop)."""
        queues = self._queues
        for index, queued in taken:
            queues[index].append(queued)

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
                return False
            if outcome == "nak":  # the retry asked for
                del self._settled[sequence]
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
                if sequence in settled:
                    del settled[sequence]  # settled again: now the most recent
                settled[sequence] = outcome
                if len(settled) > self._remember:
                    settled.popitem(last=False)
        if self._starved and self._in_memory <= self.policy.prefetch - self._min_batch:
            self._starved = False
            self._room.set()

    # ------------------------------------------------------------------ handling

    async def _work(self, index: int) -> None:
        queue = self._queues[index]
        wake = self._wakes[index]
        stop = self._stop
        while True:
            while queue:
                raw, attempt, sequence, env, error = queue.popleft()
                if sequence:
                    self._held[sequence] = None
                outcome = None
                try:
                    outcome = await self._process(index, raw, attempt, sequence, env, error)
                finally:
                    self._release(sequence, outcome)
            if stop.is_set():
                return
            wake.clear()
            await wake.wait()

    async def _process(
        self,
        index: int,
        raw: Any,
        attempt: int,
        sequence: int,
        env: Envelope[Any] | None,
        error: Exception | None,
    ) -> str | None:
        """Handle one message; how it was settled ("ack", "nak", "term"; None: it was not).
        ``env`` and ``error`` both ``None``: it is decoded now (see :meth:`_take_in`)."""
        if env is None and error is None:
            env, error = self._decoded(raw)
        if env is None:
            assert error is not None
            self._decode_errors += 1
            return await self._give_up(raw, None, error_reason(error), DECODE_HANDLER, attempt)
        policy = self.policy
        # Deliveries that may have reached a handler (this process gave none of them back).
        handled = attempt - self._unhandled.get(sequence, 0) if self._unhandled else attempt
        if handled > policy.max_deliver:
            reason = (
                f"DeliveriesExhausted: delivered {handled} times, more than max_deliver="
                f"{policy.max_deliver}; the handling process stopped before settling it"
            )
            return await self._give_up(raw, env, reason, self.name, attempt)
        msg = Message(env, attempt, raw.subject, sequence, raw)
        self._running[index] = (msg, time.monotonic())
        try:
            await self._handler(msg)
        except Exception as exc:
            self._running[index] = None
            if msg.settled is not None:
                logger.warning(
                    "handler %s raised after settling event %s (%s): %r",
                    self.name,
                    env.id,
                    msg.settled,
                    exc,
                    extra=log_fields(env, self.name),
                )
            elif handled >= policy.max_deliver or getattr(exc, "tidings_permanent", False):
                # a permanent error (a schema violation...) would fail every retry alike
                msg.settled = "term"
                reason = getattr(exc, "tidings_reason", None) or error_reason(exc)
                handler = getattr(exc, "tidings_handler", None) or self.name
                return await self._give_up(raw, env, reason, handler, attempt)
            else:
                msg.settled = "nak"
                self._retried += 1
                await self._settle(raw.nak, policy.retry_delay(attempt))
            return msg.settled
        self._running[index] = None
        if msg.settled is None:
            msg.settled = "ack"
            self._acked += 1
            try:  # as _settle does, without a coroutine of its own on this hot path
                await raw.ack()
            except Exception as exc:
                self._unsettled(exc)
        elif msg.settled == "ack":
            self._acked += 1
        elif msg.settled == "nak":
            self._retried += 1
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
            state is raw or (state is _ABSENT and sequence not in self._settled)
        )
