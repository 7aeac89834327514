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
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import ClockSkewError, DecodeError
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


def error_reason(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line, at most 1,000 characters."""
    text = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    return text if len(text) <= 1000 else text[:997] + "..."


class Consumer(TransportSubscription):
    """Runs one subscription: a fetch loop, ``policy.workers`` workers, heartbeats.

    Args:
        pattern, group, name, policy: as on the subscription.
        handler: the user's message handler.
        fetch: fetches raw messages (see :data:`Fetch`); it may raise, the loop retries.
        decode: the envelope of a raw message; raises :class:`DecodeError`.
        meta: ``(attempt, sequence)`` of a raw message.
        dead_letter: stores a dead letter, or ``None`` to drop and log instead.
        clock: merges received times (receive rule).
        on_give_up: told of each dead letter, after it is stored.
        on_cancel: called once the subscription has stopped (to release server state).
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
        self._min_batch = max(1, policy.prefetch // 4)
        self._queues: list[deque[tuple[Any, Envelope[Any] | None, DecodeError | None]]] = [
            deque() for _ in range(policy.workers)
        ]
        self._wakes = [asyncio.Event() for _ in range(policy.workers)]
        self._running: list[tuple[Message, float] | None] = [None] * policy.workers
        self._round_robin = itertools.cycle(range(policy.workers))
        self._room = asyncio.Event()
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
                raw = queue.popleft()[0]
                await self._settle(raw.nak, None)
                self._release()
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

    def stats(self) -> SubscriptionStats:
        return SubscriptionStats(
            delivered=self._delivered,
            acked=self._acked,
            retried=self._retried,
            dead_lettered=self._dead,
            decode_errors=self._decode_errors,
            clock_skew=self._skew,
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
            for raw in raws:
                self._accept(raw)

    def _accept(self, raw: Any) -> None:
        self._in_memory += 1
        if self._in_memory > self._max_in_memory:
            self._max_in_memory = self._in_memory
        self._delivered += 1
        try:
            env: Envelope[Any] | None = self._decode(raw)
            error = None
        except DecodeError as exc:
            env, error = None, exc
        workers = self.policy.workers
        if workers == 1:
            index = 0
        elif env is not None and env.key is not None:
            index = hash(env.key) % workers
        else:
            index = next(self._round_robin)
        if env is not None:
            try:
                self._clock.update(env.time)
            except ClockSkewError as exc:
                self._skew += 1
                logger.warning(
                    "event %s on %s: %s", env.id, raw.subject, exc, extra=log_fields(env, self.name)
                )
        self._queues[index].append((raw, env, error))
        self._wakes[index].set()

    def _release(self) -> None:
        self._in_memory -= 1
        if self._in_memory <= self.policy.prefetch - self._min_batch:
            self._room.set()

    # ------------------------------------------------------------------ handling

    async def _work(self, index: int) -> None:
        queue = self._queues[index]
        wake = self._wakes[index]
        stop = self._stop
        while True:
            while queue:
                raw, env, error = queue.popleft()
                try:
                    await self._process(index, raw, env, error)
                finally:
                    self._release()
            if stop.is_set():
                return
            wake.clear()
            await wake.wait()

    async def _process(
        self, index: int, raw: Any, env: Envelope[Any] | None, error: DecodeError | None
    ) -> None:
        attempt, sequence = self._meta(raw)
        if env is None:
            assert error is not None
            self._decode_errors += 1
            await self._give_up(raw, None, error_reason(error), DECODE_HANDLER, attempt)
            return
        policy = self.policy
        if attempt > policy.max_deliver:
            reason = (
                f"DeliveriesExhausted: delivered {attempt} times, more than max_deliver="
                f"{policy.max_deliver}; the handling process stopped before settling it"
            )
            await self._give_up(raw, env, reason, self.name, attempt)
            return
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
            elif attempt >= policy.max_deliver:
                msg.settled = "term"
                reason = getattr(exc, "tidings_reason", None) or error_reason(exc)
                handler = getattr(exc, "tidings_handler", None) or self.name
                await self._give_up(raw, env, reason, handler, attempt)
            else:
                msg.settled = "nak"
                self._retried += 1
                await self._settle(raw.nak, policy.retry_delay(attempt))
            return
        self._running[index] = None
        if msg.settled is None:
            msg.settled = "ack"
            self._acked += 1
            await self._settle(raw.ack)
        elif msg.settled == "ack":
            self._acked += 1
        elif msg.settled == "nak":
            self._retried += 1

    async def _give_up(
        self, raw: Any, env: Envelope[Any] | None, reason: str, handler: str, attempts: int
    ) -> None:
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
            return
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
            return
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

    async def _settle(self, settle: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await settle(*args)
        except Exception as exc:
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
        for running in self._running:
            if running is not None and now - running[1] >= interval * 0.5:
                msg = running[0]
                task = asyncio.get_running_loop().create_task(self._settle(msg.in_progress))
                self._beats.add(task)
                task.add_done_callback(self._beats.discard)
        self._schedule_heartbeat()
